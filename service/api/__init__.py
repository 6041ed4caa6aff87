"""The HTTP edge: the app, thin routes, read schemas, /metrics, the dashboard and its static files.
The only room where domain errors become status codes; nothing outside it imports it."""
