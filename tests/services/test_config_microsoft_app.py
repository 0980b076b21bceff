"""The MSP's Microsoft 365 app in the configuration file: `microsoft_app`, its secret only with
--with-secrets, idempotent, owned by the file's MSP (or named with `msp` where there are several)."""

import textwrap

import pytest
import yaml

from portal.services import ValidationError, commit
from portal.services import config_io
from portal.services import microsoft_app as app_svc
from portal.services import tenant_consent as consent_svc

APP_ID = "5f2b7c10-9d8e-4a6b-b1c2-0a9f8e7d6c5b"
SECRET = "Zq8~msp-app-secret-value"

FILE = textwrap.dedent(f"""
    clients:
      - name: Acme MSP
        children:
          - name: Contoso
    microsoft_app:
      client_id: "{APP_ID}"
      client_secret: "{SECRET}"
      secret_expires: 2027-06-30
""")


def keys(app):
    return app.config["TIDEMARK_ENCRYPTION_KEY"]


def run(app, text, **kw):
    counts = config_io.import_config(config_io.load(text, strict=True), keys=keys(app), **kw)
    commit()
    return counts


def test_imported_once_then_unchanged_and_exported_without_the_secret(app, db):
    run(app, FILE)
    msp = db.session.scalar(db.select(app_svc.MspMicrosoftApp)).msp_id
    row = app_svc.msp_microsoft_app(msp)
    assert (row.client_id, str(row.secret_expires)) == (APP_ID, "2027-06-30")
    assert app_svc.credentials(row, keys(app)).client_secret == SECRET
    assert run(app, FILE)["updated"] == 0
    plain = config_io.export_config(keys=keys(app), msp_id=msp)
    assert plain["microsoft_app"] == {"client_id": APP_ID, "secret_expires": "2027-06-30"}
    assert SECRET not in config_io.dump(plain)
    full = config_io.export_config(keys=keys(app), msp_id=msp, with_secrets=True)
    assert full["microsoft_app"]["client_secret"] == SECRET
    # The file without the secret (as exported) keeps the stored one.
    counts = run(app, config_io.dump(plain))
    assert counts["updated"] == 0
    assert app_svc.credentials(app_svc.msp_microsoft_app(msp), keys(app)).client_secret == SECRET


def test_wrong_fields_and_values_name_their_place(app, db, msp):
    with pytest.raises(ValidationError) as err:
        config_io.load("microsoft_app: {client_id: x, colour: blue}\n", strict=True)
    assert "Unknown field: colour" in " ".join(err.value.errors["microsoft_app"])
    with pytest.raises(ValidationError) as err:
        run(app, "microsoft_app: {client_id: not-a-guid, client_secret: s}\n")
    assert "is not an Application (client) ID" in " ".join(err.value.errors["microsoft_app.client_id"])


def test_the_whole_installation_names_each_apps_msp(app, db, world):
    acme, beta = world.msp("Acme MSP"), world.msp("Beta MSP")
    for msp, app_id in ((acme, APP_ID), (beta, "aaaaaaaa-9d8e-4a6b-b1c2-0a9f8e7d6c5b")):
        app_svc.save_microsoft_app(msp, {"client_id": app_id, "client_secret": SECRET}, keys=keys(app), actor=None)
    commit()
    exported = config_io.export_config(keys=keys(app), with_secrets=True)
    assert exported["microsoft_app"] == [
        {"msp": "Acme MSP", "client_id": APP_ID, "client_secret": SECRET},
        {"msp": "Beta MSP", "client_id": "aaaaaaaa-9d8e-4a6b-b1c2-0a9f8e7d6c5b", "client_secret": SECRET}]
    # Acme's page exports its own app only, as a mapping.
    assert config_io.export_config(keys=keys(app), msp_id=beta.id)["microsoft_app"]["client_id"].startswith("aaaa")
    swapped = {"microsoft_app": [{"msp": "Beta MSP", "client_id": APP_ID}]}
    run(app, yaml.safe_dump(swapped))
    assert app_svc.msp_microsoft_app(beta.id).client_id == APP_ID
    with pytest.raises(ValidationError) as err:
        run(app, f"microsoft_app: {{client_id: '{APP_ID}'}}\n")
    assert "say whose with msp: NAME" in " ".join(err.value.errors["microsoft_app"])
    with pytest.raises(ValidationError) as err:
        run(app, f"microsoft_app: {{client_id: '{APP_ID}', msp: Beta MSP}}\n", msp=acme)
    assert "is not" in " ".join(err.value.errors["microsoft_app.msp"])


def test_an_app_only_mailbox_in_the_same_file_may_use_the_imported_app(app, db):
    text = FILE + textwrap.dedent("""
        mailboxes:
          - address: helpdesk@contoso.com
            client: Contoso
            auth: oauth2
            host: outlook.office365.com
            username: helpdesk@contoso.com
            oauth: {provider: microsoft, flow: app, tenant: contoso.onmicrosoft.com}
    """)
    run(app, text)
    box = db.session.scalar(db.select(consent_svc.Mailbox))
    assert (box.oauth.client_id, box.oauth.tenant) == ("", "contoso.onmicrosoft.com")
    exported = config_io.export_config(keys=keys(app), msp_id=box.msp_id)
    assert exported["mailboxes"][0]["oauth"] == {"provider": "microsoft", "flow": "app",
                                                 "tenant": "contoso.onmicrosoft.com"}
    assert run(app, config_io.dump(exported))["updated"] == 0
