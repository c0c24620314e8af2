// The Function app on the Flex Consumption plan (FC1, Linux), running as the user-assigned identity.
// Flex rules: the runtime is set in functionAppConfig.runtime (never FUNCTIONS_WORKER_RUNTIME,
// FUNCTIONS_EXTENSION_VERSION, WEBSITE_RUN_FROM_PACKAGE, linuxFxVersion ...); one app per plan.
// App settings are exactly the ones the code reads (tests/test_infra.py compares them).

@description('Name of the Function app.')
param name string

@description('Name of its Flex Consumption plan.')
param planName string

@description('Azure region.')
param location string

@description('Tags for the plan and the app (the app also gets azd-service-name).')
param tags object = {}

@description('Resource id of the user-assigned managed identity the app runs as.')
param identityId string

@description('Client id of that identity (AZURE_CLIENT_ID, AzureWebJobsStorage__clientId).')
param identityClientId string

@description('Blob endpoint of the storage account, with a trailing slash.')
param blobEndpoint string

@description('Queue endpoint of the storage account.')
param queueEndpoint string

@description('Table endpoint of the storage account.')
param tableEndpoint string

@description('Blob container the deployment package goes to.')
param deploymentContainerName string

@description('Application Insights connection string (not a secret: local auth is off).')
param applicationInsightsConnectionString string

@description('Python version of the Functions runtime.')
@allowed([
  '3.11'
  '3.12'
])
param pythonVersion string = '3.11'

@description('Most instances Flex may scale out to.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Memory of each instance in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Vault URI, such as https://kv-abc.vault.azure.net/ (KEY_VAULT_URL).')
param keyVaultUri string

@description('Microsoft 365 tenant (M365_TENANT_ID).')
param m365TenantId string

@description('Application (client) id of the app registration (M365_CLIENT_ID).')
param m365ClientId string

@description('How the connector signs in to Graph (M365_AUTH_MODE).')
@allowed([
  'secret'
  'certificate'
  'federated'
])
param m365AuthMode string = 'secret'

@description('Name of the client secret in the vault (M365_CLIENT_SECRET_NAME).')
param m365ClientSecretName string

@description('Name of the certificate in the vault (M365_CLIENT_CERTIFICATE_NAME).')
param m365ClientCertificateName string

@description('Microsoft cloud of the tenant (M365_CLOUD).')
param m365Cloud string

@description('Domains to collect users from, or * (M365_DOMAINS).')
param m365Domains string

@description('Datasets to collect, or * (M365_DATASETS).')
param m365Datasets string

@description('Period of the Graph usage reports (M365_REPORT_PERIOD).')
param m365ReportPeriod string

@description('Six-field NCRONTAB schedule in UTC (M365_SCHEDULE).')
param m365Schedule string

@description('Redirect URI of the admin-consent URLs (M365_CONSENT_REDIRECT_URI).')
param m365ConsentRedirectUri string

@description('Blob container of the snapshots (SNAPSHOT_CONTAINER).')
param snapshotContainerName string

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225:Zone redundancy on Flex needs a region that offers it and ZRS storage; it is left to the deployer (add zoneRedundant with storageSkuName Standard_ZRS) rather than breaking deployments elsewhere.
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_17:Client certificates (mutual TLS) are not used: callers authenticate with function keys.
  // checkov:skip=CKV_AZURE_222:The run-now and status endpoints must be reachable by the operators' tools; restrict with access restrictions or a private endpoint per deployment.
  // checkov:skip=CKV_AZURE_212:Flex Consumption scales from zero by design (no minimum instance count); alwaysReady can be added to scaleAndConcurrency when cold starts matter.
  // checkov:skip=CKV_AZURE_213:No App Service health check: Flex instances scale per event from zero, so there is no fixed pool to heal; GET /api/health (anonymous) is there for availability tests.
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': 'api' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    publicNetworkAccess: 'Enabled'
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      remoteDebuggingEnabled: false
      appSettings: [
        {
          name: 'AzureWebJobsStorage__credential'
          value: 'managedidentity'
        }
        {
          name: 'AzureWebJobsStorage__clientId'
          value: identityClientId
        }
        {
          name: 'AzureWebJobsStorage__blobServiceUri'
          value: blobEndpoint
        }
        {
          name: 'AzureWebJobsStorage__queueServiceUri'
          value: queueEndpoint
        }
        {
          name: 'AzureWebJobsStorage__tableServiceUri'
          value: tableEndpoint
        }
        {
          name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
          value: applicationInsightsConnectionString
        }
        {
          name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
          value: 'ClientId=${identityClientId};Authorization=AAD'
        }
        {
          name: 'AZURE_CLIENT_ID'
          value: identityClientId
        }
        {
          name: 'M365_SCHEDULE'
          value: m365Schedule
        }
        {
          name: 'M365_CONSENT_REDIRECT_URI'
          value: m365ConsentRedirectUri
        }
        {
          name: 'M365_TENANT_ID'
          value: m365TenantId
        }
        {
          name: 'M365_CLIENT_ID'
          value: m365ClientId
        }
        {
          name: 'M365_AUTH_MODE'
          value: m365AuthMode
        }
        {
          name: 'KEY_VAULT_URL'
          value: keyVaultUri
        }
        {
          name: 'M365_CLIENT_SECRET_NAME'
          value: m365ClientSecretName
        }
        {
          name: 'M365_CLIENT_CERTIFICATE_NAME'
          value: m365ClientCertificateName
        }
        {
          name: 'M365_CLOUD'
          value: m365Cloud
        }
        {
          name: 'M365_DOMAINS'
          value: m365Domains
        }
        {
          name: 'M365_DATASETS'
          value: m365Datasets
        }
        {
          name: 'M365_REPORT_PERIOD'
          value: m365ReportPeriod
        }
        {
          name: 'SNAPSHOT_ACCOUNT_URL'
          value: blobEndpoint
        }
        {
          name: 'SNAPSHOT_CONTAINER'
          value: snapshotContainerName
        }
      ]
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${blobEndpoint}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
  }
}

// No FTP or SCM basic-auth publishing: deployments (azd, az functionapp deploy) use Entra tokens.
resource ftpPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2023-12-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2023-12-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

output id string = site.id
output name string = site.name
output defaultHostName string = site.properties.defaultHostName
