// Alerts for the people on call, on the Application Insights component the Function app logs to.
// Every rule reads the connector's own log lines (connector/collect/engine.py, connector/service/runs.py): the text the
// Functions host forwards (traces.message) and, with azure-monitor-opentelemetry, the same facts as
// customDimensions. tests/test_infra.py checks that the texts the queries look for are the ones the
// code logs. The queries are also in docs/deploy.md (Alerts and KQL).

@description('Prefix of the alert rule names.')
param namePrefix string

@description('Azure region of the alert rules.')
param location string

@description('Tags for every resource.')
param tags object = {}

@description('Resource id of the Application Insights component the Function app logs to.')
param applicationInsightsId string

@description('E-mail address that receives the alerts. Empty: the rules still fire (Azure portal, Alerts) but nobody is mailed.')
param alertEmail string = ''

@description('false: the rules are created disabled.')
param alertsEnabled bool = true

var mail = !empty(alertEmail)
var actions = mail ? {
  actionGroups: [
    actionGroup.id
  ]
} : {}

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (mail) {
  name: '${namePrefix}-oncall'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'm365conn'
    enabled: true
    emailReceivers: [
      {
        name: 'on-call'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

// A run that ended failed or partial: one alert per evaluation that saw such a run.
resource runFailed 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}-run-failed-or-partial'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'M365 connector: a run failed or was partial'
    description: 'A collection ended failed (nothing collected) or partial (some datasets skipped or failed). The manifest and GET /api/runs/{runId} name each dataset and the fix (often a permission to grant).'
    severity: 1
    enabled: alertsEnabled
    scopes: [
      applicationInsightsId
    ]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT15M'
    autoMitigate: false
    criteria: {
      allOf: [
        {
          query: 'traces | where message startswith "collection finished" | extend runId = tostring(customDimensions.run_id), status = tostring(customDimensions.status) | extend runId = iff(isempty(runId), extract(@"run (\\S+)", 1, message), runId), status = iff(isempty(status), extract(@"status=(\\w+)", 1, message), status) | where status in ("failed", "partial") | distinct runId, status'
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: actions
  }
}

// A run whose queue message failed every delivery (m365-runs-poison): run_poison marks it failed and logs it.
resource poisoned 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}-run-poisoned'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'M365 connector: a run request went to the poison queue'
    description: 'A queued run failed on every delivery and its message went to m365-runs-poison. Look the run id up in the traces; fix the cause, then POST /api/runs again.'
    severity: 1
    enabled: alertsEnabled
    scopes: [
      applicationInsightsId
    ]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT15M'
    autoMitigate: false
    criteria: {
      allOf: [
        {
          query: 'union (traces | where message has "went to m365-runs-poison" or tostring(customDimensions.event) == "run_poisoned" | project timestamp), (requests | where operation_Name == "run_poison" | project timestamp)'
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: actions
  }
}

// No run published a snapshot (succeeded or partial) for 26 hours: the daily schedule plus two hours.
resource stale 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}-no-successful-run'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'M365 connector: no successful run in 26 hours'
    description: 'No collection succeeded (or was partial) in the last 26 hours: the schedule did not fire, runs fail, or the app is stopped. Also fires after a new deployment until the first run finishes.'
    severity: 2
    enabled: alertsEnabled
    scopes: [
      applicationInsightsId
    ]
    evaluationFrequency: 'PT1H'
    windowSize: 'P2D'
    autoMitigate: true
    criteria: {
      allOf: [
        {
          query: 'traces | where timestamp > ago(26h) | where message startswith "collection finished" | extend status = tostring(customDimensions.status) | extend status = iff(isempty(status), extract(@"status=(\\w+)", 1, message), status) | where status in ("succeeded", "partial")'
          timeAggregation: 'Count'
          operator: 'LessThan'
          threshold: 1
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: actions
  }
}

// The client secret or certificate in Key Vault expires within 30 days (every run logs it from then on).
resource credential 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}-credential-expiring'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'M365 connector: the Graph credential expires within 30 days'
    description: 'The client secret or certificate stored in Key Vault expires within 30 days (or has expired). Create a new one on the app registration and store it in Key Vault with its expiry date.'
    severity: 2
    enabled: alertsEnabled
    scopes: [
      applicationInsightsId
    ]
    evaluationFrequency: 'PT6H'
    windowSize: 'P1D'
    autoMitigate: true
    criteria: {
      allOf: [
        {
          query: 'traces | where tostring(customDimensions.event) == "secret_expiring" or message startswith "The client secret in Key Vault" or message startswith "The client certificate in Key Vault" | summarize arg_max(timestamp, message)'
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: actions
  }
}

output actionGroupId string = mail ? actionGroup.id : ''
output ruleNames array = [
  runFailed.name
  poisoned.name
  stale.name
  credential.name
]
