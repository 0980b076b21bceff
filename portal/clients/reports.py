"""Clients › a client › Service report (the MSP's own covers every client): the month's
first-response and resolution times and the share within target, as a page and as CSV."""

from __future__ import annotations

from flask import Response, render_template, request

from portal import tenancy
from portal.clients.lookup import client_or_404
from portal.clients.views import bp
from portal.models.base import utcnow
from portal.services import clients as client_svc
from portal.services import sla_report as svc


def _report(client_id: int):
    client = client_or_404(client_id)
    now = utcnow()
    today = now.astimezone(tenancy.timezone_of(client)).date()
    try:
        month, error = svc.read_month(request.args.get("month", "").strip(), today), None
    except svc.MonthError as exc:
        month, error = today.replace(day=1), str(exc)
    return client, svc.service_report(client, month, now), error


@bp.get("/<int:client_id>/service-report")
def service_report(client_id: int):
    client, report, error = _report(client_id)
    return render_template("clients/service_report.html", client=client, report=report, error=error,
                           rows=svc.csv_rows(report), header=svc.CSV_HEADER, chart=svc.chart(report),
                           ancestors=list(reversed(client_svc.ancestors(client)))), 422 if error else 200


@bp.get("/<int:client_id>/service-report.csv")
def service_report_csv(client_id: int):
    client, report, error = _report(client_id)
    if error:
        return Response(error + "\n", status=422, mimetype="text/plain")
    name = "".join(ch if ch.isalnum() else "-" for ch in (client.code or client.name).lower()).strip("-") or "client"
    return Response(svc.csv_text(report), mimetype="text/csv", headers={
        "Content-Disposition": f'attachment; filename="service-report-{name}-{report.month:%Y-%m}.csv"'})
