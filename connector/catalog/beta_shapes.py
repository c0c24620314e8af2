"""Record shapes of the datasets read from Graph's /beta endpoint (opt-in: connector/catalog/datasets.py)."""

from __future__ import annotations

from connector.catalog.shapes import Field

# getMicrosoft365CopilotUsageUserDetail's JSON (learn.microsoft.com/microsoft-365/copilot/extensibility/api/
# admin-settings/reports/copilotreportroot-getmicrosoft365copilotusageuserdetail, response sample): Graph sends
# "" for a date without activity; the snapshot writes null.
_APPS = (("copilotChat", "Copilot Chat"), ("microsoftTeamsCopilot", "Copilot in Teams"),
         ("wordCopilot", "Copilot in Word"), ("excelCopilot", "Copilot in Excel"),
         ("powerPointCopilot", "Copilot in PowerPoint"), ("outlookCopilot", "Copilot in Outlook"),
         ("oneNoteCopilot", "Copilot in OneNote"), ("loopCopilot", "Copilot in Loop"))
COPILOT_USAGE_USER = (
    Field("reportRefreshDate", "date", "The day the report's data was last refreshed."),
    Field("userPrincipalName", "string", "The user (a 32-character hash when the tenant conceals names)."),
    Field("displayName", "string", "The user's display name (concealed like userPrincipalName)."),
    Field("lastActivityDate", "date", "The user's last Microsoft 365 Copilot activity in any app; null when none."),
    *(Field(f"{key}LastActivityDate", "date", f"Last activity with {what}; null when none.") for key, what in _APPS),
    Field("copilotActivityUserDetailsByPeriod", "array", "The report's period(s).",
          items=(Field("reportPeriod", "integer", "Days the report covers (7, 30, 90 or 180)."),)),
)
