"""The Microsoft Graph v1.0 stand-in, one module per area of the API (users, groups, apps, devices,
roles, reports, organization, $batch), assembled by :class:`simulator.graph.service.GraphService`.

Wire shapes follow docs/graph-facts (the project's fact sheet); section numbers in comments refer
to it.
"""
