# crm-kpi-worker container: the same steps as the README's quick start (tests keep them equal).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY crm_kpi_worker/ crm_kpi_worker/
COPY connectors/ connectors/
COPY sync/ sync/
COPY kpis/ kpis/
COPY sandbox/ sandbox/
COPY config/ config/

RUN python3 -m venv .venv && .venv/bin/pip install -q .

# Run as an unprivileged user; mount the config read-only and give secrets as env or files.
# /data: where a SQLite store lives (mount a volume there; it takes this owner).
RUN useradd --system --uid 10001 --home-dir /app crmkpi && chown crmkpi /app \
    && mkdir /data && chown crmkpi /data
USER 10001
ENV PATH=/app/.venv/bin:$PATH
# One JSON object per log line, for the log collector (runtime.log_format in the config wins).
ENV CRM_KPI_LOG_FORMAT=json

# The service's HTTP port (runtime.http: {host: 0.0.0.0, port: 8080} in the config): /healthz,
# /readyz, /metrics and the status page. The health check is plain python (no curl here).
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]

ENTRYPOINT ["crm-kpi"]
CMD ["demo"]
