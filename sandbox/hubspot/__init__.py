"""The sandbox HubSpot portal: the shared data set served in HubSpot's CRM v3 wire format."""
