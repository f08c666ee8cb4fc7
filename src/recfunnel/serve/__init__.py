"""Online serving: the HTTP API, event intake, hot reload, metrics and the web page."""
