# CPU image of the service: the gateway with its embedded engine. Not built in this repository's CI: the
# development machines have no Docker engine. Everything the engine needs ships in its wheels.
FROM python:3.11-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends espeak-ng libgl1 libglib2.0-0 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY engine ./engine
COPY gateway ./gateway
COPY openapi.yaml ./
RUN pip install --no-cache-dir -e .
ENV HEYGEM_DATA_DIR=/data HEYGEM_CACHE_DIR=/data/cache HEYGEM_HOST=0.0.0.0 HEYGEM_PORT=8000
VOLUME /data
EXPOSE 8000
ENTRYPOINT ["heygem"]
CMD ["serve"]
