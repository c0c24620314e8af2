// Key Vault for the app registration's credential (client secret, or certificate).
// The secret VALUE is never in a template or parameter file: it is set after deployment with
// `az keyvault secret set --expires ...` (docs/deploy.md), so its expiry date is a Key Vault
// attribute the connector reads and warns about.

@description('Name of the vault (3-24 characters, globally unique).')
@minLength(3)
@maxLength(24)
param name string

@description('Azure region.')
param location string

@description('Tags for the vault.')
param tags object = {}

@description('Days a deleted vault or secret stays recoverable (7-90; fixed once the vault exists).')
@minValue(7)
@maxValue(90)
param softDeleteRetentionInDays int = 90

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109:Flex Consumption without VNet integration reaches the vault over its public endpoint; access is Entra RBAC only (no access policies), and a default-deny firewall would lock the app out.
  // checkov:skip=CKV_AZURE_189:Same reason as CKV_AZURE_109: public network access is needed unless the app is VNet-integrated with a private endpoint.
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: softDeleteRetentionInDays
    enablePurgeProtection: true
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

output id string = vault.id
output name string = vault.name
output uri string = vault.properties.vaultUri
