from flask_wtf import FlaskForm
from wtforms import SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional

from portal.mail.language import LANGUAGES


class ClientForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired("Give the client a name."), Length(max=200)])
    code = StringField(
        "Short code", validators=[Optional(), Length(max=20)],
        description="Shown in lists, e.g. CONTOSO. Letters and digits.",
    )
    parent_id = SelectField("Sits below", coerce=int, validate_choice=True)
    allow = TextAreaField(
        "Allow-list",
        description="Sender addresses and domains whose mail belongs to this client: one per line or "
        "separated by spaces or commas, domains without @ (contoso.com boss@gmail.com).",
    )
    waterline = TextAreaField(
        "Waterline",
        validators=[Length(max=2000)],
        description="Everything from this text down is cut from an inbound email. Empty = inherited.",
    )
    timezone = StringField("Time zone", description="Times in this client's emails are shown in it.")
    # Checked by the service (the configuration import takes the same path).
    language = SelectField("Language of its mail", validate_choice=False,
                           description="The built-in templates and the dates in this client's mail are written in it; "
                           "its own templates stay as written.")
    sla_policy_id = SelectField(
        "SLA policy", default="", validate_choice=True,
        description="The service level of the client's new tickets (and its sub-clients', unless they choose "
        "their own). Open tickets keep the one they have.",
    )
    reference_prefix = StringField(
        "Ticket reference prefix", description="Ticket references read PREFIX-1042, e.g. T-1042 or DEMO-1042."
    )

    service_errors: dict

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.language.choices = [("", "As the client above (English at the top)"), *LANGUAGES.items()]
        self.service_errors = {}
