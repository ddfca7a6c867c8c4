<?php
# Send this wiki's recent changes to udp2xmpp: stock MediaWiki ($wgRCFeeds, 1.22+),
# no extension. Append to LocalSettings.php (or require_once this file from it).
#
# One UDP datagram per change, fire-and-forget: a stopped bridge never slows the
# wiki down. The bridge must accept this server's address (udp.allow in
# bridge.toml); stock MediaWiki cannot sign datagrams, so keep
# udp.require_signature = false for it.

$wgRCFeeds['xmlrc'] = [
	// The bridge's udp.listen. IPv6: 'udp://[2001:db8::5]:9390'. An optional
	// path becomes a line prefix ('udp://127.0.0.1:9390/farm'): the bridge strips it.
	'uri' => 'udp://127.0.0.1:9390',
	// What the bridge decodes best: JSON carries every field the feed has
	// (log parameters typed). 'XMLRCFeedFormatter' works too.
	'formatter' => 'JSONRCFeedFormatter',
	// Bots' changes too; readers filter them (rooms.filtered, bot = false).
	'omit_bots' => false,
	// Other keys, all optional: 'omit_anon', 'omit_user', 'omit_minor',
	// 'omit_patrolled' (true drops such changes here, before they are sent).
];

# Links in the room messages come from these (sent with every change):
# $wgServer = 'https://wiki.example.org';
# $wgScriptPath = '/w';
# $wgDBname is the wiki ID: its room is <$wgDBname lower-cased>@<rooms.service>.

# A wiki farm: every wiki sends to the same bridge; each lands in its own room.
# Several bridges (e.g. one per data centre): one $wgRCFeeds entry each,
# with distinct keys ('xmlrc-eqiad', 'xmlrc-codfw').
