"""The real-network labs: network namespaces with a kernel NAT, and the compose caller.

``rtclab lab --netns`` builds the stack's topology out of network namespaces
joined by veth pairs -- the stack in one, a NAT router (nftables masquerade)
in another, the callers behind it in a third -- and runs the scenarios there:
a rebind is a real NAT rebinding (the router's conntrack mapping flushed, or
its public address moved), and impairment is the kernel's netem when it has
one, else the user-space emulator running on the router.

The compose lab's caller container uses the same NAT control and emulator on
its own namespace (:mod:`lab.compose.caller`).  See docs/labs.md.
"""
