# The streamlearn image: one image, several commands. docker-compose.yml runs
# `streamlearn produce`, `streamlearn run` and `streamlearn serve` from it.
#
#   docker build -t streamlearn .
#   docker run --rm streamlearn --help
#   docker run --rm -p 8000:8000 -e STREAMLEARN_REGISTRY_URL=redis://HOST:6379/0 \
#       streamlearn serve --host 0.0.0.0 --port 8000
#
# CPU only by default. For a CUDA build pass another wheel index, e.g.
#   --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
# (and run it with a GPU runtime).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# torch first, pinned, from the CPU-only wheel index: the default PyPI wheel
# drags in the CUDA libraries (several GB) even where no GPU will ever be.
# Installing the project afterwards keeps it: torch>=2.3 is already satisfied.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"

# Only what the package build needs (see [tool.setuptools.packages.find]).
WORKDIR /opt/streamlearn
COPY pyproject.toml README.md ./
COPY stream stream
COPY learners learners
COPY drift drift
COPY serving serving
# [fast]: confluent-kafka, the faster Kafka client (`streamlearn run --backend confluent`).
RUN pip install '.[fast]' \
    && rm -rf build ./*.egg-info \
    && streamlearn --version

# An unprivileged user. /data belongs to it so that a named volume mounted
# there (the learner's checkpoints in docker-compose.yml) starts out writable:
# Docker copies the image directory's ownership into a new, empty volume.
RUN groupadd --system --gid 10001 streamlearn \
    && useradd --system --uid 10001 --gid streamlearn --create-home --home-dir /home/streamlearn \
        --shell /usr/sbin/nologin streamlearn \
    && mkdir -p /data \
    && chown streamlearn:streamlearn /data
USER streamlearn:streamlearn
# Relative defaults (.streamlearn/checkpoints, .streamlearn/registry) land here.
WORKDIR /data

# `streamlearn serve --host 0.0.0.0 --port 8000` (the prediction API).
EXPOSE 8000
ENTRYPOINT ["streamlearn"]
CMD ["--help"]
