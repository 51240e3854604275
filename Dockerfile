# TuneLab, CPU image: the web app by default, the `tunelab` command for everything else.
#
#   docker build -t tunelab .
#   docker run -p 7860:7860 -v tunelab-data:/data tunelab   # prints http://127.0.0.1:7860/?token=... (docker logs)
#   docker run -e TUNELAB_AUTH=admin:s3cret -p 7860:7860 -v tunelab-data:/data tunelab   # a login instead
#   docker run -v tunelab-data:/data tunelab tunelab train cls --train_file /data/datasets/reviews.csv
#
# GPU: see Dockerfile.cuda. Runs, uploaded data and the Hugging Face cache live on the /data volume.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GRADIO_ANALYTICS_ENABLED=False \
    GRADIO_SERVER_NAME=0.0.0.0 \
    HF_HOME=/data/hf \
    TUNELAB_RUNS_DIR=/data/runs \
    TUNELAB_DATA_DIR=/data/datasets \
    TUNELAB_CACHE=/data/cache

# The app runs as "tunelab" (uid 1000); the source stays root-owned, only /data is the user's.
RUN useradd --create-home --uid 1000 --shell /bin/bash tunelab \
    && mkdir -p /data \
    && chown tunelab:tunelab /data

# tini as PID 1: it forwards signals to the app and reaps recipes whose launcher ended before them
# (the app starts each run in its own session; without an init they would stay zombies).
RUN apt-get update \
    && apt-get install -y --no-install-recommends "tini=0.19.*" \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/tunelab

# The install is .ci/run's command, so CI proves it in a fresh venv (tests/test_dockerfile.py checks
# they match): `pip install torch==2.13.0 -e ".[dev]"` without the dev extra (pytest, playwright, ...).
# - torch: the wheel on PyPI pulls CUDA libraries (GBs); the PyTorch CPU index, added as an *extra*
#   index, offers 2.13.0+cpu, which pip prefers and which satisfies the pin; the rest comes from PyPI.
# - -e: recipes/ and app/, which the command launches, live beside the package in the source tree.
# One resolve, as in CI, at the price of re-installing when the source changes (no separate torch layer).
COPY . /opt/tunelab
RUN pip install --no-cache-dir torch==2.13.0 -e . --extra-index-url https://download.pytorch.org/whl/cpu

USER 1000:1000
VOLUME ["/data"]
EXPOSE 7860

# slim has no curl: ask the app's front page with Python's own urllib.
HEALTHCHECK --interval=30s --timeout=10s --start-period=90s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:7860/healthz', timeout=8)"]

ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["tunelab", "app", "--host", "0.0.0.0", "--port", "7860"]
