from flask_wtf import FlaskForm
from flask_wtf.file import FileField
from wtforms import RadioField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional

from portal.display import place


class _Form(FlaskForm):
    service_errors: dict
    # A service's name for what this form calls otherwise: its messages go to the form's field.
    renamed: dict[str, str] = {}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.service_errors = {}

    def place_errors(self, errors: dict) -> None:
        """The service's messages by this form's fields; what it has no field for goes above it."""
        self.service_errors = place(errors, set(self._fields), self.renamed)


class AssignForm(_Form):
    client_id = SelectField("Client", coerce=int, validate_choice=True,
                            description="A new ticket for this client, made as a routed email's would be "
                                        "(the mailbox's ticket defaults and acknowledgement).")


class AppendForm(_Form):
    reference = StringField("Ticket reference", validators=[DataRequired("Type the ticket's reference, e.g. T-1042."),
                                                            Length(max=40)],
                            description="The email goes onto that ticket as if it had been a reply to it.")


class TeachForm(_Form):
    client_id = SelectField("Client", coerce=int, validate_choice=True)
    scope = RadioField("Whose mail", default="domain", validators=[DataRequired("Choose the address or the domain.")])


class CheckForm(_Form):
    mailbox_id = SelectField("Mailbox", coerce=int, validate_choice=False,
                             description="The mailbox the email arrives in.")
    sender = StringField("From", validators=[Optional(), Length(max=320)])
    to = StringField("To", validators=[Optional(), Length(max=2000)],
                     description="Addresses separated by commas. Leave To and Cc empty for BCC'd mail.")
    cc = StringField("Cc", validators=[Optional(), Length(max=2000)])
    subject = StringField("Subject", validators=[Optional(), Length(max=998)])
    body = TextAreaField("Body", validators=[Optional(), Length(max=100_000)],
                         description="Optional: references in the body (T-1042) count too.")
    raw = TextAreaField("Or paste a whole email", validators=[Optional(), Length(max=5_000_000)],
                        description="Headers and body as received (e.g. from \"show original\"). "
                                    "When given, the fields above are not used.")
    upload = FileField("Or upload an .eml file", description="A saved email; it wins over pasted text.")


class BccRouteForm(_Form):
    client_id = SelectField("Client the sender's mail goes to", coerce=int, validate_choice=True)
    scope = RadioField("Whose BCC'd mail", default="domain",
                       validators=[DataRequired("Choose the address or the domain.")])


class NewClientForm(_Form):
    renamed = {"allow": "name"}  # the sender's entry is not typed here: its problem is said by the name
    name = StringField("Name", validators=[DataRequired("Give the client a name."), Length(max=200)],
                       description="A new client of your MSP, with the sender's domain on its allow-list.")
