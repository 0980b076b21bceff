"""Tidemark: email-to-ticket portal for MSPs. The app factory is portal.app.create_app()."""
