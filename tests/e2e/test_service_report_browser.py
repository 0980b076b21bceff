import re

import pytest
from playwright.sync_api import expect

from tests.conftest import PASSWORD
from tests.portal.test_service_report import month  # noqa: F401 - the fixture: November 2026 at Contoso

pytestmark = pytest.mark.e2e


def test_a_technician_picks_a_month_and_reads_the_report_with_its_chart(live_server, page, month):  # noqa: F811
    _msp, contoso, _fabrikam = month
    page.goto(live_server + "/sign-in")
    page.get_by_label("Email address").fill("ana@acme.example")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.goto(live_server + "/clients")
    page.get_by_role("link", name="Contoso").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(re.compile("Contoso"))
    page.get_by_role("link", name="Service report", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Service report: Contoso")
    page.get_by_label("Month").fill("2026-11")
    page.get_by_role("button", name="Show").click()
    expect(page).to_have_url(re.compile(r"month=2026-11"))
    expect(page.get_by_role("heading", level=1)).to_contain_text("November 2026")
    expect(page.get_by_role("img", name=re.compile("Business time to first response"))).to_be_visible()
    row = page.locator('tr[data-priority="normal"][data-clock="first response"]')
    expect(row.locator("td").nth(3)).to_have_text("90.0")  # the business median, as worked out by hand
    expect(row.locator("td").last).to_have_text("33.3")
    expect(page.locator("#report-csv")).to_have_attribute("href", re.compile(r"service-report\.csv\?month=2026-11$"))
    with page.expect_download() as download:
        page.locator("#report-csv").click()
    assert download.value.suggested_filename == "service-report-contoso-2026-11.csv"
    page.get_by_label("Month").fill("2025-01")
    page.get_by_role("button", name="Show").click()
    expect(page.get_by_text("No ticket was created in January 2025")).to_be_visible()
