# S4 server with its web console (docs/operations.md "Container image"). Multi-stage: wheels built in the first
# stage, installed in a slim runtime that runs as a non-root user with its data in the /data volume.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY api api
COPY cluster cluster
COPY engine engine
COPY journal journal
COPY tools tools
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --user-group --home-dir /data --no-create-home s4 \
    && mkdir -p /data && chown s4:s4 /data && chmod 700 /data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
ENV S4_DATA_DIR=/data \
    S4_BIND=0.0.0.0:9000 \
    S4_CONSOLE_BIND=0.0.0.0:3000
USER s4
VOLUME ["/data"]
EXPOSE 9000 3000
ENTRYPOINT ["s4-server"]
