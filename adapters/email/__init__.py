"""Email: each event sent as a message through an SMTP server."""
