<?php
# Send this wiki's recent changes to udp2xmpp: stock MediaWiki ($wgRCFeeds, 1.22+),
# no extension. Append to LocalSettings.php (or require_once this file from it).
#
# One UDP datagram per change, fire-and-forget: a stopped bridge never slows the
# wiki down. The bridge must accept this server's address (udp.allow in
# bridge.toml); stock MediaWiki cannot sign datagrams, so keep
# udp.require_signature = false for it.

$wgRCFeeds['xmlrc'] = [
	// The engine. MediaWiki 1.46 requires 'class'; 1.43 moved the class into the
	// MediaWiki\RCFeed namespace, and 1.39-1.42 only know 'UDPRCFeedEngine'
	// (there the namespaced name fails: the edit is saved, nothing is sent).
	// This line works on all of them (checked on 1.39 by tests/mediawiki).
	'class' => class_exists( \MediaWiki\RCFeed\UDPRCFeedEngine::class )
		? \MediaWiki\RCFeed\UDPRCFeedEngine::class : 'UDPRCFeedEngine',
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

# ---- Or through Redis (pub/sub), for a bridge with a [redis] section ----
# MediaWiki PUBLISHes each change on a channel: the URI's path, '/' turned into
# '.' ('/testwiki/rc' is channel testwiki.rc; no path: channel 'rc'). Needs the
# php-redis extension (Debian: apt-get install php-redis). MediaWiki 1.39 logs in
# with a password only (the default user's, requirepass): put it in the URI.
#
# Pub/sub keeps nothing: a change published while no bridge is subscribed (the
# bridge restarting, Redis restarting) is lost. Run two bridges, or fill gaps
# with `rc2udp poll` from the API.
#
# $wgRCFeeds['xmlrc-redis'] = [
# 	'class' => class_exists( \MediaWiki\RCFeed\RedisPubSubFeedEngine::class )
# 		? \MediaWiki\RCFeed\RedisPubSubFeedEngine::class : 'RedisPubSubFeedEngine',
# 	'uri' => 'redis://:PASSWORD@127.0.0.1:6379/rc',   // redis.channels = ["rc"]
# 	'formatter' => 'JSONRCFeedFormatter',              // or 'XMLRCFeedFormatter'
# 	'omit_bots' => false,
# ];
