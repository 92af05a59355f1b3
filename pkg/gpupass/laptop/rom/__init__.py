"""The GPU's vBIOS for the guest: what a valid one is (format), where it comes from on the
laptop (sources, copies) or in a BIOS update (bios_update), how it is stored (store), and the
guest's ``_ROM`` table that serves it (acpi_table)."""
