"""Acquiring models: from a name to a verified, installed folder in the store.

``hub`` (:class:`HubClient`, the Hub protocol), ``_plan`` (which files, which
digests), ``_fetch`` (one transfer through the core's ``download_many``, then
stage and publish), ``_install`` (offline install from a folder), ``validate``
(the spec's validation steps), and ``manager`` (:class:`ModelManager`: the
policies: offline, updates, repair, limits).
"""
