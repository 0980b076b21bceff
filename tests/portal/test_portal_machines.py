"""Portal processes on several machines behind one reverse proxy share only PostgreSQL (or the
database), Redis and their environment: any of them serves the next request of a signed-in person."""

from portal.app import create_app
from tests.conftest import Browser


def test_a_sign_in_at_one_portal_holds_at_another_with_the_same_environment(app, world, browser):
    msp = world.msp("Acme MSP")
    world.user(msp, email="ann@acme.example", role="admin")
    other = create_app("testing", SQLALCHEMY_DATABASE_URI=app.config["SQLALCHEMY_DATABASE_URI"],
                       REDIS_URL=app.config["REDIS_URL"], TIDEMARK_QUEUE=app.config["TIDEMARK_QUEUE"],
                       SECRET_KEY=app.config["SECRET_KEY"],
                       TIDEMARK_ENCRYPTION_KEY=app.config["TIDEMARK_ENCRYPTION_KEY"])
    assert browser.sign_in("ann@acme.example").status_code == 302
    there = Browser(other.test_client())
    there.client.set_cookie("tidemark_session", browser.client.get_cookie("tidemark_session").value)
    page = there.get("/")
    assert page.status_code == 200 and "ann@acme.example" in page.get_data(as_text=True)
    # Signing out there ends the session here too: the session's token lives in the database.
    assert there.post("/sign-out").status_code == 302
    assert browser.get("/").status_code == 302
    # A portal with another SECRET_KEY does not take the cookie.
    stranger = Browser(create_app("testing", SQLALCHEMY_DATABASE_URI=app.config["SQLALCHEMY_DATABASE_URI"],
                                  REDIS_URL=app.config["REDIS_URL"], SECRET_KEY="another-key").test_client())
    stranger.client.set_cookie("tidemark_session", browser.client.get_cookie("tidemark_session").value)
    assert stranger.get("/").status_code == 302
