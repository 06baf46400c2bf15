# The API on the CPU: `docker compose up` serves the trained artifacts in ./artifacts on port 8008.
# Build the artifacts first (`fbm prepare`, `fbm train all`, `fbm index`); the image holds code only.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FBM_ARTIFACTS=/artifacts \
    NLTK_DATA=/usr/local/share/nltk_data

WORKDIR /app

# torch and torchvision as CPU builds (the default wheels carry CUDA, gigabytes more), at the pinned
# versions; then every other pin of requirements.txt, which the installed pair already satisfies.
COPY requirements.txt ./
RUN pip install --index-url https://download.pytorch.org/whl/cpu \
        "$(grep '^torch==' requirements.txt)" "$(grep '^torchvision==' requirements.txt)" \
 && pip install -r requirements.txt \
 && python -m nltk.downloader -q -d "$NLTK_DATA" stopwords wordnet

COPY pyproject.toml ./
COPY listings ./listings
COPY image_model ./image_model
COPY text_model ./text_model
COPY combined_model ./combined_model
COPY retrieval ./retrieval
COPY api ./api
COPY scripts ./scripts
RUN pip install --no-deps -e . \
 && useradd --create-home --uid 1000 fbm \
 && mkdir -p /artifacts \
 && chown fbm:fbm /artifacts

USER fbm
VOLUME ["/artifacts"]
EXPOSE 8008
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8008/health', timeout=4).status != 200)"]
CMD ["fbm", "serve"]
