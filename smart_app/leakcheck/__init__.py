"""The zero-leak go-live check (``flask --app smart_app leak-check``): does anything the app writes reach the
patient portal or a proxy? DEPLOY.md makes it a go-live step."""
