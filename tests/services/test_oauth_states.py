"""A started sign-in is kept in Redis, bound to its starter, taken once, and forgotten in time."""

from dataclasses import replace

from flask import url_for

from portal.oauth import Authorisation
from portal.services import oauth_states


def _started(state="s-123"):
    return Authorisation(url="https://login.example/authorize?state=" + state, state=state, verifier="v" * 64,
                         redirect_uri="https://portal.example/oauth/callback", scopes=("a", "b"))


def test_taken_once_by_its_starter_with_everything_kept(app):
    oauth_states.remember("mailbox", msp_id=1, user_id=7, subject_id=42, authorisation=_started(), app_id="app-1")
    found = oauth_states.take("s-123", user_id=7)
    assert found is not None
    assert (found.purpose, found.msp_id, found.user_id, found.subject_id) == ("mailbox", 1, 7, 42)
    assert found.authorisation == replace(_started(), url="")  # the address is not needed again
    assert found.app_id == "app-1"
    assert oauth_states.take("s-123", user_id=7) is None  # a replayed callback finds nothing


def test_someone_else_cannot_use_it_and_it_is_gone_afterwards(app):
    oauth_states.remember("mailbox", msp_id=1, user_id=7, subject_id=3, authorisation=_started(), app_id="app-1")
    assert oauth_states.take("s-123", user_id=8) is None
    assert oauth_states.take("s-123", user_id=7) is None


def test_unknown_and_empty_states_find_nothing(app):
    assert oauth_states.take("never-started", user_id=7) is None
    assert oauth_states.take("", user_id=7) is None
    assert oauth_states.take(None, user_id=7) is None


def test_stored_under_a_hash_with_a_lifetime_and_no_clear_state(app, redis):
    oauth_states.remember("mailbox", msp_id=1, user_id=7, subject_id=42, authorisation=_started("plain-state"),
                          app_id="app-1")
    import hashlib

    keys = [k.decode() for k in redis.keys("tidemark:oauth-state:*")]
    assert keys and not any("plain-state" in k for k in keys)
    hashed = "tidemark:oauth-state:" + hashlib.sha256(b"plain-state").hexdigest()
    assert 0 < redis.ttl(hashed) <= oauth_states.LIFETIME


def test_an_unknown_purpose_is_refused(app):
    import pytest

    with pytest.raises(ValueError):
        oauth_states.remember("password reset", msp_id=1, user_id=7, subject_id=1, authorisation=_started(), app_id="app-1")


def test_a_mailbox_sign_in_is_never_taken_without_its_signed_in_starter(app):
    oauth_states.remember("mailbox", msp_id=1, user_id=7, subject_id=42, authorisation=_started(), app_id="app-1")
    assert oauth_states.take("s-123", user_id=None) is None
    assert oauth_states.take("s-123", user_id=7) is None  # gone: a stolen state is not tried twice


def test_a_tenant_consent_is_taken_once_by_whoever_opens_the_emailed_link(app):
    oauth_states.remember("tenant consent", msp_id=1, user_id=7, subject_id=3, authorisation=_started(), app_id="app-1")
    found = oauth_states.take("s-123", user_id=None)  # the customer's admin: no portal user
    assert (found.purpose, found.msp_id, found.user_id, found.subject_id) == ("tenant consent", 1, 7, 3)
    assert oauth_states.take("s-123", user_id=None) is None
    oauth_states.remember("tenant consent", msp_id=1, user_id=7, subject_id=3, authorisation=_started("s-2"), app_id="app-1")
    assert oauth_states.take("s-2", user_id=99) is not None  # a portal user opening it: the same


def test_a_consent_link_lasts_a_week_and_a_mailbox_sign_in_ten_minutes(app, redis):
    import hashlib

    oauth_states.remember("tenant consent", msp_id=1, user_id=7, subject_id=3, authorisation=_started("c"), app_id="app-1")
    oauth_states.remember("mailbox", msp_id=1, user_id=7, subject_id=3, authorisation=_started("m"), app_id="app-1")

    def ttl(state):
        return redis.ttl("tidemark:oauth-state:" + hashlib.sha256(state.encode()).hexdigest())

    assert 6 * 24 * 3600 < ttl("c") <= 7 * 24 * 3600
    assert 0 < ttl("m") <= 600


def test_the_purpose_is_read_without_taking_the_sign_in(app):
    oauth_states.remember("mailbox", msp_id=1, user_id=7, subject_id=42, authorisation=_started(), app_id="app-1")
    assert oauth_states.purpose_of("s-123") == "mailbox"
    assert oauth_states.purpose_of("unknown") is None and oauth_states.purpose_of(None) is None
    assert oauth_states.take("s-123", user_id=7) is not None  # still there


def test_the_one_callback_address_is_the_callback_routes(app):
    with app.test_request_context():
        path = url_for("oauth_callback.callback")
    assert oauth_states.redirect_uri("https://tickets.acme.example/") == "https://tickets.acme.example" + path
    assert oauth_states.redirect_uri("https://tickets.acme.example/desk") == "https://tickets.acme.example/desk" + path


def test_the_app_id_is_kept_itself_and_the_sign_in_address_is_not(app, redis):
    # The address names another client id: what comes back is the app the sign-in was started for.
    oauth_states.remember("tenant consent", msp_id=1, user_id=7, subject_id=3, authorisation=_started("k"),
                          app_id="5f2b7c10-9d8e-4a6b-b1c2-0a9f8e7d6c5b")
    (key,) = redis.keys("tidemark:oauth-state:*")
    assert "login.example" not in redis.get(key).decode()
    found = oauth_states.take("k", user_id=None)
    assert found.app_id == "5f2b7c10-9d8e-4a6b-b1c2-0a9f8e7d6c5b" and found.authorisation.url == ""
