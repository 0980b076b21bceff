"""The SLA policy form: a row per weekday (its spans as typed), holidays one per line, the time
zone, and per priority a first-response and a resolution target in hours and minutes."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import StringField, TextAreaField

from portal.models.tickets import PRIORITIES
from portal.services import sla
from portal.sla.business_time import WEEKDAYS
from portal.sla.clock import CLOCKS


class SlaPolicyForm(FlaskForm):
    name = StringField("Name", description="e.g. Gold, Office hours, 24/7.")
    timezone = StringField("Time zone", description="The business hours and holidays are read in it.")
    holidays = TextAreaField("Holidays", description="One date per line (2026-12-25): closed all day.")
    warning_percent = StringField("Warn at (% of a target)",
                                  description="A warning goes out when this share of a target has passed.")

    service_errors: dict

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.service_errors = {}

    def fill(self, data: sla.PolicyForm) -> None:
        self.name.data, self.timezone.data = data.name, data.timezone
        self.holidays.data, self.warning_percent.data = data.holidays, data.warning_percent
        for day in WEEKDAYS:
            getattr(self, f"hours_{day}").data = data.hours.get(day, "")
        for priority in PRIORITIES:
            for clock in CLOCKS:
                hours, minutes = data.targets[priority][clock]
                getattr(self, f"{priority}_{clock}_hours").data = hours
                getattr(self, f"{priority}_{clock}_minutes").data = minutes

    def policy_form(self) -> sla.PolicyForm:
        return sla.PolicyForm(
            name=self.name.data or "", timezone=self.timezone.data or "", holidays=self.holidays.data or "",
            warning_percent=self.warning_percent.data or "",
            hours={d: getattr(self, f"hours_{d}").data or "" for d in WEEKDAYS},
            targets={p: {c: (getattr(self, f"{p}_{c}_hours").data or "", getattr(self, f"{p}_{c}_minutes").data or "")
                         for c in CLOCKS} for p in PRIORITIES})


for _day in WEEKDAYS:
    setattr(SlaPolicyForm, f"hours_{_day}", StringField(sla.WEEKDAY_NAMES[_day]))
for _priority in PRIORITIES:
    for _clock in CLOCKS:
        setattr(SlaPolicyForm, f"{_priority}_{_clock}_hours", StringField("hours"))
        setattr(SlaPolicyForm, f"{_priority}_{_clock}_minutes", StringField("minutes"))
