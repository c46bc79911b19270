# Triton Inference Server with the guard model's Python dependencies, and the project
# installed into the image's Python so the model (model_repo/guard/*/model.py) can import it.
# Also the default image of the GPU retrain CronJob (CUDA torch + `guardstream` CLI).
#
#   docker build -f docker/triton.Dockerfile -t guardstream/triton:0.1.0 .
#
# The Python backend runs models with the image's own Python: check that it satisfies the
# project's requires-python (pyproject.toml) when changing TRITON_IMAGE; `pip install .`
# below fails with "requires a different Python" otherwise.
# 25.01 and later: Ubuntu 24.04 with Python 3.12 (24.x images have Python 3.10).
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:25.01-py3
FROM ${TRITON_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# numpy<2: the Python backend stub crashes on numpy 2. torch from PyPI is a CUDA 12 build.
RUN pip install "numpy<2" "torch>=2.4" "transformers>=5.0,<6"

WORKDIR /opt/guardstream
COPY pyproject.toml README.md ./
COPY guard/ guard/
COPY stream_app/ stream_app/
COPY training/ training/
COPY bench/ bench/
COPY guardstream_cli/ guardstream_cli/
RUN pip install "numpy<2" . && rm -rf build *.egg-info

# Default model repository; the chart mounts the PersistentVolumeClaim over it, or points
# --model-repository at an object store.
COPY model_repo/ /models/

# The chart runs Triton as uid 10001 with a read-only root filesystem (/tmp, /dev/shm are
# emptyDirs); HOME and the Hugging Face cache must be writable.
ENV HOME=/tmp \
    HF_HOME=/tmp/huggingface
USER 10001:10001

EXPOSE 8000 8001 8002
CMD ["tritonserver", "--model-repository=/models", "--model-control-mode=explicit", \
     "--load-model=guard", "--strict-readiness=true"]
