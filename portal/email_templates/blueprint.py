"""The email templates blueprint (the pages of a client's email templates and canned responses),
on its own so that both modules of the package add their pages to it without importing each other."""

from flask import Blueprint

bp = Blueprint("email_templates", __name__, url_prefix="/clients/<int:client_id>/emails")
