fn main() {
    std::process::exit(imapgate::main());
}
