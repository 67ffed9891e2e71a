#!/usr/bin/env python3
"""Prints the debian/copyright paragraphs of the vendored crates.

    debian/vendor-copyright.py SOURCE_DIR

SOURCE_DIR is an unpacked tarball of contrib/dist.sh (with vendor/). One "Files:
vendor/CRATE/*" paragraph per crate, its licence taken from the "license" field of the
crate's Cargo.toml (SPDX, written in DEP-5's syntax) and its "Copyright" from the
"authors" field, which is the only statement of authorship most crates make. Crates that
no Linux build needs are stubs in vendor/ (their Cargo.toml only) and are listed all the
same. After a change to Cargo.lock, paste the output over the vendor/ paragraphs of
debian/copyright, and add a standalone License paragraph for any new licence;
upstream's CI (.ci/package) fails while the two differ.
"""

import os
import re
import sys
import tomllib

# SPDX identifiers and their DEP-5 short names, where they differ.
DEP5_NAMES = {"LGPL-2.1-or-later": "LGPL-2.1+", "LLVM-exception": "LLVM"}


def dep5_license(spdx: str) -> str:
    """SPDX expression -> DEP-5 License field (as far as crates.io's forms go)."""
    expr = spdx.replace("/", " OR ").strip()
    # "(A OR B) AND C": DEP-5 groups with a comma ("A or B, and C").
    m = re.fullmatch(r"\(([^()]+)\) AND ([^()]+)", expr)
    if m:
        return f"{dep5_license(m.group(1))}, and {dep5_license(m.group(2))}"
    if "(" in expr or ")" in expr:
        raise SystemExit(f"vendor-copyright: cannot translate licence {spdx!r}")
    words = []
    for word in expr.split():
        if word in ("OR", "AND", "WITH"):
            words.append(word.lower())
        else:
            words.append(DEP5_NAMES.get(word, word))
    text = " ".join(words)
    # "Apache-2.0 with LLVM" -> DEP-5's "Apache-2.0 with LLVM exception".
    return re.sub(r" with (\S+)", r" with \1 exception", text)


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    vendor = os.path.join(sys.argv[1], "vendor")
    paragraphs = []
    for entry in sorted(os.listdir(vendor)):
        with open(os.path.join(vendor, entry, "Cargo.toml"), "rb") as f:
            pkg = tomllib.load(f)["package"]
        if "license" not in pkg:
            raise SystemExit(f"vendor-copyright: {entry} has no licence field")
        authors = [re.sub(r"\s+", " ", a).strip() for a in pkg.get("authors", [])]
        authors = authors or [f"the {pkg['name']} developers"]
        paragraphs.append(
            f"Files: vendor/{entry}/*\n"
            f"Copyright: {chr(10).join(' ' + a if i else a for i, a in enumerate(authors))}\n"
            f"License: {dep5_license(pkg['license'])}\n"
            f"Comment: {pkg['name']} {pkg['version']}, from crates.io."
        )
    print("\n\n".join(paragraphs))


if __name__ == "__main__":
    main()
