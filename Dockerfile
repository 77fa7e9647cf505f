# One image for every role of Triggers (docker build .):
#   docker run IMAGE                   the API on 0.0.0.0:8000 (set TRIGGERS_REDIS_URL; without
#                                      it the API starts an embedded Redis in /data)
#   docker run IMAGE worker            Dramatiq workers (any `triggers` subcommand as arguments)
# The base is an argument so that a locally made Debian image can stand in for the official
# one where no registry is reachable; both have `python3` on PATH.
ARG BASE_IMAGE=python:3.12-slim

# Build stage: a virtual environment with the project and its wheels (every dependency ships
# binary wheels, so no compiler is needed here either); only /opt/triggers leaves this stage.
FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/triggers
WORKDIR /src
# Dependencies first: this layer stays cached while only the code changes.
COPY pyproject.toml README.md ./
RUN mkdir service && touch service/__init__.py \
    && /opt/triggers/bin/pip install --no-cache-dir . dumb-init==1.2.5.post1 \
    && /opt/triggers/bin/pip uninstall --yes triggers-service
COPY service ./service
RUN /opt/triggers/bin/pip install --no-cache-dir --no-deps . \
    && /opt/triggers/bin/python -m compileall -q /opt/triggers/lib \
    && rm -rf /opt/triggers/bin/pip* /opt/triggers/lib/python3*/site-packages/pip

# Runtime stage: the base image, the environment and an unprivileged user; nothing else.
FROM ${BASE_IMAGE}
ENV PATH=/opt/triggers/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TRIGGERS_DATA_DIR=/data
RUN useradd --system --uid 10001 --user-group --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin triggers \
    && install -d -o triggers -g triggers -m 0750 /data
COPY --from=build /opt/triggers /opt/triggers
USER 10001:10001
WORKDIR /data
EXPOSE 8000
# `triggers serve` and `triggers worker` both stop gracefully on SIGTERM: the API drains its
# requests, workers finish the tasks they run (up to 30 s) and then exit 0. dumb-init is PID 1:
# it passes the signal to the whole process group and reaps every exited child.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
ENTRYPOINT ["dumb-init", "--", "triggers"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
