# guardstream Python app: the stream worker (`guardstream worker`), the topic-creation job
# and CPU retraining. CPU-only torch keeps the image small; GPU work runs in the Triton image.
#
#   docker build -f docker/stream-app.Dockerfile -t guardstream/stream-app:0.1.0 .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# torch first, from the CPU wheel index, so that installing the project does not pull a
# CUDA build (the project's dependency range admits the CPU wheel).
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch>=2.4"

WORKDIR /opt/guardstream
COPY pyproject.toml README.md ./
COPY guard/ guard/
COPY stream_app/ stream_app/
COPY training/ training/
COPY bench/ bench/
COPY guardstream_cli/ guardstream_cli/
RUN pip install . && rm -rf build *.egg-info

# Non-root user 10001 (the chart runs every pod as 10001 with a read-only root filesystem;
# /tmp and faust's data dir are emptyDir volumes there).
RUN groupadd --system --gid 10001 guardstream \
    && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home guardstream \
    && mkdir -p /var/lib/guardstream \
    && chown 10001:10001 /var/lib/guardstream
ENV HOME=/tmp \
    GUARDSTREAM_WORKER__DATA_DIR=/var/lib/guardstream
USER 10001:10001
WORKDIR /tmp

EXPOSE 6066
ENTRYPOINT ["guardstream"]
CMD ["worker"]
