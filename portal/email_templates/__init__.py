from portal.email_templates import canned  # noqa: F401 - registers the canned-response views on bp
