# Bulk actions and the ticket fields register on the blueprint that views.py defines.
from portal.tickets import bulk, fields  # noqa: E402,F401
