"""The VM: the passthrough pieces of a libvirt domain (pieces, on the xmledit element layer),
put into a user's domain and taken out (attach), or the package's own domain defined (define);
libvirt reached only through libvirtconn; the domain gpupass manages (record)."""
