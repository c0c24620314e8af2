// Microsoft 365 inventory connector: everything it needs in one resource group.
// Deploy with `azd up`, or `az deployment sub create -l <region> -f infra/main.bicep -p ...`
// (docs/deploy.md). The client secret VALUE is never a parameter: set it in Key Vault afterwards.
targetScope = 'subscription'

@description('Name of the environment (azd env name); used for the resource group and the resource-name token.')
@minLength(1)
@maxLength(64)
param environmentName string

@description('Azure region of every resource (one that offers Flex Consumption).')
@minLength(1)
@metadata({ azd: { type: 'location' } })
param location string

@description('Object id of the person or pipeline deploying: gets Key Vault Secrets Officer on the vault to set the secret. Empty = none.')
param principalId string = ''

@description('Type of principalId.')
@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param principalType string = 'User'

@description('Microsoft 365 tenant id or domain to collect (M365_TENANT_ID). Empty = the tenant of this subscription. With a tenant registry (docs/tenants.md) the registered tenants are collected instead.')
param m365TenantId string = ''

@description('Application (client) id of the app registration with the Graph application permissions (M365_CLIENT_ID).')
@minLength(36)
@maxLength(36)
param m365ClientId string

@description('How the connector signs in to Graph: secret (Key Vault secret), certificate (Key Vault certificate) or federated (no secret: the app registration trusts the managed identity).')
@allowed([
  'secret'
  'certificate'
  'federated'
])
param m365AuthMode string = 'secret'

@description('NAME of the Key Vault secret holding the client secret (M365_CLIENT_SECRET_NAME). The value is set after deployment.')
@minLength(1)
@maxLength(127)
param m365ClientSecretName string = 'm365-client-secret'

@description('NAME of the Key Vault certificate for M365_AUTH_MODE=certificate (M365_CLIENT_CERTIFICATE_NAME).')
@minLength(1)
@maxLength(127)
param m365ClientCertificateName string = 'm365-client-certificate'

@description('Microsoft cloud of the tenant (M365_CLOUD).')
@allowed([
  'global'
  'usgov'
  'usgovdod'
  'china'
])
param m365Cloud string = 'global'

@description('* for every user, or domains separated by commas (M365_DOMAINS).')
@minLength(1)
param m365Domains string = '*'

@description('* for every dataset, or dataset names separated by commas (M365_DATASETS).')
@minLength(1)
param m365Datasets string = '*'

@description('Period of the Graph usage reports (M365_REPORT_PERIOD).')
@allowed([
  'D7'
  'D30'
  'D90'
  'D180'
])
param m365ReportPeriod string = 'D30'

@description('When scheduled runs start: six-field NCRONTAB in UTC (M365_SCHEDULE).')
@minLength(11)
param m365Schedule string = '0 0 2 * * *'

@description('Redirect URI of the admin-consent URLs printed for each customer tenant (M365_CONSENT_REDIRECT_URI); it must be a redirect URI of the multi-tenant app registration.')
param m365ConsentRedirectUri string = 'https://login.microsoftonline.com/common/oauth2/nativeclient'

@description('Days a snapshot run is kept before lifecycle management deletes it.')
@minValue(1)
@maxValue(36500)
param retentionDays int = 400

@description('Days after which snapshot blobs move to the Cool tier (keep below retentionDays).')
@minValue(1)
@maxValue(36500)
param coolAfterDays int = 30

@description('Python version of the Function app.')
@allowed([
  '3.11'
  '3.12'
])
param pythonVersion string = '3.11'

@description('Most instances the Flex plan may scale out to: each instance collects one tenant at a time (host.json queues.batchSize 1), so this caps how many tenants are collected at once.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Memory of each Flex instance in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Replication of the storage account.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
  'Standard_RAGRS'
  'Standard_RAGZRS'
])
param storageSkuName string = 'Standard_LRS'

@description('Days Log Analytics keeps data.')
@minValue(30)
@maxValue(730)
param logRetentionDays int = 30

@description('E-mail address for the alerts (run failed or partial, poison queue, no successful run in 26 hours, credential expiring within 30 days). Empty: the alerts still fire in the Azure portal, nobody is mailed.')
param alertEmail string = ''

@description('Create the alert rules enabled (they are created either way).')
param alertsEnabled bool = true

var abbrs = loadJsonContent('./abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var tenantToCollect = empty(m365TenantId) ? tenant().tenantId : m365TenantId
var functionAppName = '${abbrs.webSitesFunctions}${resourceToken}'
var snapshotContainerName = 'm365-snapshots'
var deploymentContainerName = 'app-package'
var runQueueName = 'm365-runs'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: '${abbrs.resourcesResourceGroups}${environmentName}'
  location: location
  tags: tags
}

module identity './core/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: '${abbrs.managedIdentityUserAssignedIdentities}${resourceToken}'
    location: location
    tags: tags
  }
}

module monitor './core/monitor.bicep' = {
  name: 'monitor'
  scope: rg
  params: {
    logAnalyticsName: '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
    applicationInsightsName: '${abbrs.insightsComponents}${resourceToken}'
    location: location
    tags: tags
    logRetentionDays: logRetentionDays
  }
}

module alerts './core/alerts.bicep' = {
  name: 'alerts'
  scope: rg
  params: {
    namePrefix: '${abbrs.alertRules}${resourceToken}'
    location: location
    tags: tags
    applicationInsightsId: monitor.outputs.applicationInsightsId
    alertEmail: alertEmail
    alertsEnabled: alertsEnabled
  }
}

module storage './core/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: '${abbrs.storageStorageAccounts}${resourceToken}'
    location: location
    tags: tags
    skuName: storageSkuName
    snapshotContainerName: snapshotContainerName
    deploymentContainerName: deploymentContainerName
    runQueueName: runQueueName
    retentionDays: retentionDays
    coolAfterDays: coolAfterDays
  }
}

module keyVault './core/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: '${abbrs.keyVaultVaults}${resourceToken}'
    location: location
    tags: tags
  }
}

module rbac './app/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    principalId: identity.outputs.principalId
    storageAccountName: storage.outputs.name
    keyVaultName: keyVault.outputs.name
    applicationInsightsName: monitor.outputs.applicationInsightsName
    deployerPrincipalId: principalId
    deployerPrincipalType: principalType
  }
}

module api './app/api.bicep' = {
  name: 'api'
  scope: rg
  params: {
    name: functionAppName
    planName: '${abbrs.webServerFarms}${resourceToken}'
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    blobEndpoint: storage.outputs.blobEndpoint
    queueEndpoint: storage.outputs.queueEndpoint
    tableEndpoint: storage.outputs.tableEndpoint
    deploymentContainerName: storage.outputs.deploymentContainerName
    applicationInsightsConnectionString: monitor.outputs.connectionString
    pythonVersion: pythonVersion
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    keyVaultUri: keyVault.outputs.uri
    m365TenantId: tenantToCollect
    m365ClientId: m365ClientId
    m365AuthMode: m365AuthMode
    m365ClientSecretName: m365ClientSecretName
    m365ClientCertificateName: m365ClientCertificateName
    m365Cloud: m365Cloud
    m365Domains: m365Domains
    m365Datasets: m365Datasets
    m365ReportPeriod: m365ReportPeriod
    m365Schedule: m365Schedule
    m365ConsentRedirectUri: m365ConsentRedirectUri
    snapshotContainerName: storage.outputs.snapshotContainerName
  }
  dependsOn: [
    rbac
  ]
}

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = api.outputs.name
output AZURE_FUNCTION_APP_URL string = 'https://${api.outputs.defaultHostName}'
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output AZURE_KEY_VAULT_URL string = keyVault.outputs.uri
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_MANAGED_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output AZURE_MANAGED_IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId
output APPLICATIONINSIGHTS_CONNECTION_STRING string = monitor.outputs.connectionString
output M365_TENANT_ID string = tenantToCollect
output M365_CLIENT_ID string = m365ClientId
output M365_AUTH_MODE string = m365AuthMode
output M365_CLIENT_SECRET_NAME string = m365ClientSecretName
output M365_CLIENT_CERTIFICATE_NAME string = m365ClientCertificateName
output SNAPSHOT_ACCOUNT_URL string = storage.outputs.blobEndpoint
output SNAPSHOT_CONTAINER string = storage.outputs.snapshotContainerName
output RUN_QUEUE_NAME string = storage.outputs.runQueueName
