from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, SelectField, StringField
from wtforms.validators import DataRequired, Length

ROLE_CHOICES = [("technician", "Technician: works tickets, reads the configuration"),
                ("admin", "Admin: also changes the configuration and manages users")]


class _ServiceErrors:
    """Room for a service's ValidationError next to WTForms' own errors (see display.field_errors)."""

    service_errors: dict

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.service_errors = {}


class InviteForm(_ServiceErrors, FlaskForm):
    email = EmailField("Email address", validators=[DataRequired("Enter their email address.")])
    name = StringField("Name", validators=[Length(max=200)], description="How colleagues see them, e.g. Ana Lopez.")
    role = SelectField("Role", choices=ROLE_CHOICES, default="technician")


class RoleForm(_ServiceErrors, FlaskForm):
    role = SelectField("Role", choices=ROLE_CHOICES)


class SetPasswordForm(_ServiceErrors, FlaskForm):
    password = PasswordField("New password", validators=[DataRequired("Choose a password.")],
                             description="At least 10 characters. A few words make a good one.")
    confirmation = PasswordField("Repeat the password", validators=[DataRequired("Type the password again.")])


class ProfileForm(_ServiceErrors, FlaskForm):
    name = StringField("Name", validators=[Length(max=200)])
    # A list of zone names (templates/_macros.html timezone_field), checked by the service.
    timezone = StringField("Time zone",
                           description="Times in the portal are shown in this zone.")


class PasswordForm(_ServiceErrors, FlaskForm):
    current = PasswordField("Current password", validators=[DataRequired("Enter your current password.")])
    password = PasswordField("New password", validators=[DataRequired("Choose a new password.")],
                             description="At least 10 characters. Your other sessions are signed out.")
    confirmation = PasswordField("Repeat the new password", validators=[DataRequired("Type the new password again.")])
