"""The HTTP API, the search page and `fbm serve`.

`app.create_app(config, services)` builds the FastAPI app; `server.serve(config)` loads the models
and the index (`services.load_services`) and runs it with uvicorn. Routes live in `routes/`, input
checks in `uploads.py`, the micro-batcher in `batching.py`, the page in `static/`.
"""
