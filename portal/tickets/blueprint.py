"""The tickets blueprint, on its own so that every module of the package can add its pages to
it without importing the package (whose __init__ imports those modules)."""

from flask import Blueprint

bp = Blueprint("tickets", __name__, url_prefix="/tickets")
