//! `%`-templates of lookup keys, Dovecot's variables: `%u` the login, `%n` its part before
//! the last `@`, `%d` the part after it, `%r` the client's address, `%%` a `%`. An LDAP
//! filter expands them escaped (RFC 4515); an SQL query binds them as parameters.

use super::Query;

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    Var(Var),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    User,
    Local,
    Domain,
    ClientIp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(pub Vec<Piece>);

impl Template {
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut lit = String::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                lit.push(c);
                continue;
            }
            let var = match chars.next() {
                Some('%') => {
                    lit.push('%');
                    continue;
                }
                Some('u') => Var::User,
                Some('n') => Var::Local,
                Some('d') => Var::Domain,
                Some('r') => Var::ClientIp,
                Some(other) => {
                    return Err(format!("unknown variable %{other} (known: %u %n %d %r %%)"))
                }
                None => return Err("a lone % at the end (write %% for a percent sign)".into()),
            };
            if !lit.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut lit)));
            }
            pieces.push(Piece::Var(var));
        }
        if !lit.is_empty() {
            pieces.push(Piece::Text(lit));
        }
        Ok(Template(pieces))
    }

    /// Expands the template, each value passed through `escape`.
    pub fn expand(&self, q: &Query<'_>, escape: impl Fn(&str) -> String) -> String {
        self.0
            .iter()
            .map(|p| match p {
                Piece::Text(t) => t.clone(),
                Piece::Var(v) => escape(&value(*v, q)),
            })
            .collect()
    }
}

/// The value of a variable for `q`.
pub fn value(var: Var, q: &Query<'_>) -> String {
    let (local, domain) = match q.user.rsplit_once('@') {
        Some((l, d)) => (l, d),
        None => (q.user, ""),
    };
    match var {
        Var::User => q.user.to_string(),
        Var::Local => local.to_string(),
        Var::Domain => domain.to_string(),
        Var::ClientIp => q.client.map(|a| a.ip().to_string()).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_expand_and_unknown_ones_are_errors() {
        let t = Template::parse("(&(uid=%n)(dc=%d)(x=100%%)(all=%u))").unwrap();
        let q = Query {
            user: "bob@example.org",
            password: None,
            client: Some("192.0.2.1:5".parse().unwrap()),
            tls: false,
            client_cert: None,
            attempt: 1,
        };
        assert_eq!(
            t.expand(&q, str::to_string),
            "(&(uid=bob)(dc=example.org)(x=100%)(all=bob@example.org))"
        );
        assert_eq!(Template::parse("%r").unwrap().expand(&q, str::to_string), "192.0.2.1");
        assert!(Template::parse("%x").unwrap_err().contains("%x"));
        assert!(Template::parse("50%").is_err());
    }
}
