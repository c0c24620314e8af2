// One storage account for the Functions host (AzureWebJobsStorage: timer locks, queue bookkeeping),
// the deployment package, the run queue and the snapshots. Identity-only: shared keys are off, so
// there is no connection string anywhere.

@description('Name of the storage account (3-24 lower-case letters and digits, globally unique).')
@minLength(3)
@maxLength(24)
param name string

@description('Azure region.')
param location string

@description('Tags for the account.')
param tags object = {}

@description('Replication. LRS is the cheapest; ZRS or GZRS keep snapshots through a zone or region outage.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
  'Standard_RAGRS'
  'Standard_RAGZRS'
])
param skuName string = 'Standard_LRS'

@description('Blob container for snapshots (the connector setting SNAPSHOT_CONTAINER).')
param snapshotContainerName string

@description('Blob container Flex Consumption deploys the app package to.')
param deploymentContainerName string

@description('Storage queue the run-now endpoint and the timer enqueue runs on.')
param runQueueName string

@description('Days after their last change that snapshot runs (prefix tenants/ of the snapshot container) are deleted.')
@minValue(1)
param retentionDays int

@description('Days after their last change that snapshot blobs move to the Cool tier (keep it below retentionDays).')
@minValue(1)
param coolAfterDays int

@description('Days deleted blobs and containers stay recoverable (soft delete).')
@minValue(1)
@maxValue(365)
param softDeleteDays int = 14

@description('Days previous blob versions are kept before lifecycle management deletes them.')
@minValue(1)
param previousVersionDays int = 30

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35:Flex Consumption without VNet integration reaches its host storage over the public endpoint; a default-deny firewall stops the app. Access is Entra RBAC only (allowSharedKeyAccess false).
  // checkov:skip=CKV_AZURE_59:Same reason as CKV_AZURE_35: public network access is needed unless the app is VNet-integrated with private endpoints.
  // checkov:skip=CKV_AZURE_206:Replication is the skuName parameter; LRS is the default because snapshots can be collected again. Pick ZRS/GZRS where that matters.
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    accessTier: 'Hot'
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: {
          enabled: true
          keyType: 'Account'
        }
        file: {
          enabled: true
          keyType: 'Account'
        }
        queue: {
          enabled: true
          keyType: 'Account'
        }
        table: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    isVersioningEnabled: true
    deleteRetentionPolicy: {
      enabled: true
      days: softDeleteDays
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: softDeleteDays
    }
  }
}

resource snapshotContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: snapshotContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

// The Functions runtime creates '<queue>-poison' itself when a message fails too often.
resource runQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: runQueueName
}

// Runs live under <container>/tenants/<tenantId>/runs/<runId>/. Old runs are deleted after
// retentionDays; versions left by overwrites and deletions go after previousVersionDays.
resource lifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    policy: {
      rules: [
        {
          name: 'expire-old-snapshot-runs'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: [
                'blockBlob'
              ]
              prefixMatch: [
                '${snapshotContainerName}/tenants/'
              ]
            }
            actions: {
              baseBlob: {
                tierToCool: {
                  daysAfterModificationGreaterThan: coolAfterDays
                }
                delete: {
                  daysAfterModificationGreaterThan: retentionDays
                }
              }
              version: {
                delete: {
                  daysAfterCreationGreaterThan: previousVersionDays
                }
              }
            }
          }
        }
      ]
    }
  }
  dependsOn: [
    snapshotContainer
  ]
}

output id string = storage.id
output name string = storage.name
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output queueEndpoint string = storage.properties.primaryEndpoints.queue
output tableEndpoint string = storage.properties.primaryEndpoints.table
output snapshotContainerName string = snapshotContainer.name
output deploymentContainerName string = deploymentContainer.name
output runQueueName string = runQueue.name
