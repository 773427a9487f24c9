"""L2: zero 5xx. Hypothesis drives every route and form of the app (from ``app.url_map``) with hostile
path values, query strings and form fields, and a hostile EHR fake (discovery, token response, id_token,
JWKS) through /launch and /callback; no response may be a 5xx or show a stack trace. Bounded examples so
the whole file runs in well under a minute."""

from __future__ import annotations

import base64
import json
import re
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config.current import replace_settings
from tests.conftest import app_config, launch_for
from tests.launch.fakes import FakeEhr
from tests.security.conftest import ROOT, start

pytestmark = pytest.mark.security

FUZZ = settings(max_examples=300, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
HOSTILE = st.one_of(
    st.text(max_size=30),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=30),
    st.sampled_from(["\x00", "%00", "é", "\u202e", "../..", "javascript:alert(1)", "ftp://x/", "x" * 5000,
                     "hits", "da-5", "yes", "submit", "decline", "not_now", "contacted", "closed", "es", "en",
                     "02115", "-1", "1e309", "[]", "{}", "<script>", "' OR 1=1 --", FakeEhr.ISS]),
)
HOSTILE_EHR = settings(FUZZ, max_examples=200)
FIELDS = st.sampled_from(["iss", "launch", "state", "code", "error", "error_description", "instrument", "action",
                          "alone", "no_family_interpreter", "lang", "zip", "need", "consent", "channel",
                          "resources", "digest", "status", "note", "q-hurt", "q-weapon", "csrf_token", "x"])
STATS = {"examples": 0, "5xx": 0}


def _rules(app) -> list[tuple[str, str]]:
    out = []
    for rule in app.url_map.iter_rules():
        for method in sorted((rule.methods or set()) & {"GET", "POST"}):
            out.append((rule.rule, method))
    return sorted(out)


def _check(resp, what) -> None:
    STATS["examples"] += 1
    text = resp.get_data(as_text=True)
    if resp.status_code >= 500:
        STATS["5xx"] += 1
    assert resp.status_code < 500, (what, resp.status_code, text[:300])
    assert "Traceback" not in text and 'File "' not in text, what


@pytest.fixture
def fuzz_app(tmp_path):
    from smart_app import create_app

    app = create_app(app_config(f"sqlite:///{tmp_path / 'f.db'}", RATELIMIT_ENABLED=False))
    ehr = FakeEhr("fake-app")
    replace_settings(app, ALLOWED_ISS=[FakeEhr.ISS])
    app.extensions["smart_http"] = ehr.adapter.session()
    yield app
    app.extensions["db_engine"].dispose()


def test_every_route_and_form_never_answers_5xx(fuzz_app):
    """L2: random values in every path variable, query and form field of every route (GET and POST), with and
    without a live launch of this browser."""
    rules = _rules(fuzz_app)
    assert len(rules) >= 20  # every blueprint's routes are in the map

    @FUZZ
    @given(rule=st.sampled_from(rules), live=st.booleans(), segs=st.lists(HOSTILE, min_size=3, max_size=3),
           query=st.dictionaries(FIELDS, HOSTILE, max_size=4), form=st.dictionaries(FIELDS, HOSTILE, max_size=6))
    def run(rule, live, segs, query, form):
        path, method = rule
        client = fuzz_app.test_client()
        lid = launch_for(fuzz_app, client) if live else None
        values = iter(segs)
        url = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>",
                     lambda m: lid if (m.group(1) == "lid" and lid) else quote(next(values), safe=""), path)
        if query:
            url += "?" + urlencode(query)
        if method == "GET":
            resp = client.get(url)
        else:
            resp = client.post(url, data=form)
        _check(resp, (method, url, form))

    run()
    print(f"\nL2 fuzz over {len(rules)} route/method pairs: {STATS['examples']} requests, {STATS['5xx']} x 5xx")


def _b64(obj) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


ODD = st.one_of(st.none(), st.integers(), st.booleans(), st.lists(st.integers(), max_size=2),
                st.dictionaries(st.text(max_size=3), st.integers(), max_size=2), HOSTILE,
                st.sampled_from(["ftp://fake-ehr.test/token", "https://evil.example/x", "http://fake-ehr.test/x",
                                 "https://fake-ehr.test/%00", "https://fake-ehr.test/auth/token"]))


def test_hostile_ehr_values_never_answer_5xx(fuzz_app):
    """L2: a hostile EHR (odd discovery endpoints, token responses, id_token claims and JWKS) gets a plain
    4xx page (424 when the EHR failed), never a 5xx."""

    app, client = fuzz_app, fuzz_app.test_client()
    fake = FakeEhr("fake-app")
    replace_settings(app, client_id="fake-app",
                                                   client_auth="none", scopes_ehr="launch openid fhirUser")
    replace_settings(app, ALLOWED_ISS=[FakeEhr.ISS])
    app.extensions["smart_http"] = fake.adapter.session()
    base_doc = {"issuer": FakeEhr.ISS, "jwks_uri": ROOT + "/auth/jwks", "authorization_endpoint": ROOT + "/auth/a",
                "token_endpoint": ROOT + "/auth/token", "code_challenge_methods_supported": ["S256"]}
    token_keys = ["access_token", "token_type", "expires_in", "scope", "patient", "encounter", "id_token",
                  "need_patient_banner", "smart_style_url", "intent", "fhirContext", "refresh_token"]
    claim_keys = ["iss", "aud", "nonce", "fhirUser", "exp", "iat", "sub", "azp"]

    @HOSTILE_EHR
    @given(doc=st.dictionaries(st.sampled_from(list(base_doc) + ["revocation_endpoint"]), ODD, max_size=2),
           token=st.dictionaries(st.sampled_from(token_keys), ODD, max_size=3),
           claims=st.dictionaries(st.sampled_from(claim_keys), ODD, max_size=2),
           jwk=st.dictionaries(st.sampled_from(["kty", "alg", "use", "kid", "n", "e", "crv", "x"]), ODD, max_size=2),
           status=st.sampled_from([200, 200, 200, 400, 401, 500, 302]))
    def run(doc, token, claims, jwk, status):
        fake.adapter.add("GET", FakeEhr.ISS + "/.well-known/smart-configuration", (200, {**base_doc, **doc}))
        fake.token_status = status
        fake.token_extra = dict(token)
        fake.id_token_claims = dict(claims)
        fake.adapter.add("GET", ROOT + "/auth/jwks",
                         lambda _r: (200, {"keys": [{**fake.jwks()["keys"][0], **jwk}]}))
        with app.app_context():
            app.extensions.pop("smart_discovery", None)
            from fhir.smart import id_token

            id_token._default_cache = id_token.JwksCache()
        resp = client.get(f"/launch?iss={quote(FakeEhr.ISS)}&launch=L1")
        _check(resp, ("launch", doc))
        if resp.status_code != 302:
            return
        q = {k: v[0] for k, v in parse_qs(urlsplit(resp.headers["Location"]).query).items()}
        fake.nonce = q.get("nonce")
        _check(client.get(f"/callback?code=c-{STATS['examples']}&state={q['state']}"), ("callback", token, claims))

    before = dict(STATS)
    run()
    print(f"\nL2 hostile EHR: {STATS['examples'] - before['examples']} requests, {STATS['5xx'] - before['5xx']} x 5xx")


@pytest.mark.parametrize("case", ["ftp-token-endpoint", "mismatched-jwk", "non-ascii-nonce", "non-ascii-iss-claim",
                                  "nul-patient-id"])
def test_reviewed_ehr_values_get_a_clear_4xx(app, client, case):
    """L2: the review's hostile EHR values: an ftp:// token endpoint, a JWK of the wrong type, a non-ASCII
    nonce or iss in the id_token, a NUL in the patient id."""

    fake = FakeEhr("fake-app")
    replace_settings(app, client_id="fake-app",
                                                   client_auth="none", scopes_ehr="launch openid fhirUser")
    replace_settings(app, ALLOWED_ISS=[FakeEhr.ISS])
    app.extensions["smart_http"] = fake.adapter.session()
    if case == "ftp-token-endpoint":
        fake.adapter.add("GET", FakeEhr.ISS + "/.well-known/smart-configuration", (200, {
            "issuer": FakeEhr.ISS, "jwks_uri": ROOT + "/auth/jwks", "authorization_endpoint": ROOT + "/auth/a",
            "token_endpoint": "ftp://fake-ehr.test/token"}))
        resp = client.get(f"/launch?iss={quote(FakeEhr.ISS)}&launch=L1")
        assert resp.status_code == 424 and "Traceback" not in resp.get_data(as_text=True)
        return
    if case == "mismatched-jwk":
        import jwt
        from cryptography.hazmat.primitives.asymmetric import ec

        ec_jwk = jwt.algorithms.ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP384R1()).public_key(), as_dict=True)
        fake.adapter.add("GET", ROOT + "/auth/jwks", (200, {"keys": [{**ec_jwk, "kid": fake.kid, "alg": "RS256"}]}))
    elif case == "non-ascii-nonce":
        fake.tamper = None
        fake.id_token_claims["nonce"] = "nönce-é"
    elif case == "non-ascii-iss-claim":
        fake.id_token_claims["iss"] = "https://fäke-ehr.test/fhir"
    else:
        fake.token_extra["patient"] = "p1\x00"
    q = start(client, fake)
    resp = client.get(f"/callback?code=c1&state={q['state']}")
    text = resp.get_data(as_text=True)
    assert 400 <= resp.status_code < 500 and "Traceback" not in text, (case, resp.status_code, text[:200])


def test_non_ascii_iss_on_launch_is_a_4xx(client):
    """L2: /launch?iss=%C3%A9 was a TypeError in compare_digest (500)."""
    for iss in ("%C3%A9", "https://%C3%A9.example/fhir", "%E2%80%AE"):
        resp = client.get(f"/launch?iss={iss}&launch=x")
        text = resp.get_data(as_text=True)
        assert resp.status_code == 400 and ("not registered" in text or "has an invalid" in text), iss


@pytest.mark.postgres
def test_nul_in_ids_on_postgresql_is_a_4xx(postgres_url):
    """L2: a NUL in the launch id, state, code or a form field on PostgreSQL (which rejects NUL in text)."""
    from smart_app import create_app

    app = create_app(app_config(postgres_url))
    try:
        client = app.test_client()
        lid = launch_for(app, client)
        for method, url, data in [("GET", "/l/%00/", None), ("GET", "/l/a%00b/result", None),
                                  ("GET", "/callback?state=%00&code=x", None),
                                  ("GET", "/callback?state=abc&code=%00", None),
                                  ("GET", "/launch?iss=x&launch=%00", None),
                                  ("POST", f"/l/{lid}/gate", {"alone": "yes\x00", "action": "start"}),
                                  ("POST", f"/l/{lid}/screen", {"instrument": "hits\x00"}),
                                  ("POST", "/exit", {"csrf_token": "\x00"})]:
            resp = client.open(url, method=method, data=data)
            assert 400 <= resp.status_code < 500 or resp.status_code in (302, 308), (url, resp.status_code)
            assert "Traceback" not in resp.get_data(as_text=True)
        assert client.get(f"/l/{lid}/").status_code in (200, 404)
    finally:
        app.extensions["db_engine"].dispose()
