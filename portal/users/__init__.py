"""The people of an MSP: the users page (admins), invitations, and everyone's own settings."""
