/*
 * Fake battery for a Windows guest with a laptop NVIDIA GPU (gpupass-hp-victus-16-navi23).
 *
 * The NVIDIA driver for a laptop GPU stays in Code 43 unless the machine shows a
 * battery. This table gives the guest a full battery on AC power: a Control Method
 * Battery (PNP0C0A) with _STA/_BIF/_BST and an AC adapter (ACPI0003) whose _PSR says
 * "online", which the tables commonly copied around lack.
 * Rendered from acpi/ssdt-battery.asl.j2; compiled with iasl at package build.
 */
DefinitionBlock ("", "SSDT", 2, "GPUPAS", "BATTERY", 0x00000001)
{
    Scope (\_SB)
    {
        Device (AC0)
        {
            Name (_HID, "ACPI0003")
            Name (_UID, Zero)
            Name (_PCL, Package (0x01) { \_SB })
            Method (_STA, 0, NotSerialized) { Return (0x0F) }
            Method (_PSR, 0, NotSerialized) { Return (One) }   // on line
        }

        Device (BAT0)
        {
            Name (_HID, EisaId ("PNP0C0A"))
            Name (_UID, Zero)
            Name (_PCL, Package (0x01) { \_SB })
            // Present, enabled, shown, functioning, battery present.
            Method (_STA, 0, NotSerialized) { Return (0x1F) }
            Method (_BIF, 0, NotSerialized)
            {
                Return (Package (0x0D)
                {
                    Zero,                               // power unit: mWh
                    70070,  // design capacity
                    70070,  // last full charge capacity
                    One,                                // technology: rechargeable
                    15400,  // design voltage (mV)
                    7007,  // design capacity of warning
                    3503,  // design capacity of low
                    One,                                // granularity low -> warning
                    One,                                // granularity warning -> full
                    "GPUPASS BAT0",  // model number
                    "0001",  // serial number
                    "LION",  // battery type
                    "GPUPASS"  // OEM information
                })
            }
            Method (_BST, 0, NotSerialized)
            {
                Return (Package (0x04)
                {
                    Zero,                               // state: neither charging nor discharging
                    Zero,                               // present rate
                    70070,  // remaining capacity: full
                    15400  // present voltage (mV)
                })
            }
        }
    }
}
