"""tobira as an OpenID Connect provider: the clients file, the signing keys, the grants, the tokens.

    clients.py   the apps that may use tobira (`TOBIRA_OIDC_CLIENTS`), validated in one pass; secret hashes
    keys.py      the signing keys: made by tobira, kept encrypted in the store, rotated, published
    claims.py    what tobira says about a Misskey account (`sub`, `preferred_username`, …)
    provider.py  the authorization request, codes, the token endpoint, userinfo and logout: the protocol
    handoff.py   where a person's sign-in (or tobira session) becomes the account an app is told about

Protocol code: no web framework. The routes (`app.routes.oidc`) translate HTTP to these calls and back.
"""
