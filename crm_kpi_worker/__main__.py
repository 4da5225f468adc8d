"""``python -m crm_kpi_worker``: the same as the ``crm-kpi`` command."""

from crm_kpi_worker.sync.cli import main

if __name__ == "__main__":
    main()
