def main() -> None:
    from crm_kpi_worker.sandbox.salesforce import probe
    print("ok", probe.x)
