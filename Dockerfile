# CPU image of the engine (and, later, the gateway). Not built in this repository's CI: the
# development machines have no Docker engine. Everything the engine needs ships in its wheels.
FROM python:3.11-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends espeak-ng libgl1 libglib2.0-0 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY engine ./engine
RUN pip install --no-cache-dir .
ENV HEYGEM_CACHE_DIR=/data/cache
VOLUME /data
ENTRYPOINT ["heygem"]
CMD ["demo", "--out", "/data/demo"]
