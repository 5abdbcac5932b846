using System.Globalization;
using System.Net;
using Analytics.Simulation.Models;

namespace Analytics.Simulation;

/// <summary>
/// Builds the <see cref="World"/> of a scenario from its seed: same seed and start, same world. Every
/// entity gets a ground-truth label; benign ones carry their population as the variant and the group
/// they share addresses with (their own, an office, a carrier, an ISP pool) as the campaign, so that
/// evaluation can split by group and report each population on its own.
/// </summary>
public static class WorldBuilder
{
    /// <summary>Benign populations, as label variants.</summary>
    public static class Populations
    {
        public const string Ordinary = "ordinary";
        public const string OfficeNat = "office_nat";
        public const string Cgnat = "cgnat";
        public const string NewSender = "new_sender";
        public const string Traveller = "traveller";
        public const string Newsletter = "newsletter";
        public const string TicketSystem = "ticket_system";
        public const string MailingList = "mailing_list";
        public const string Inbound = "inbound";
        public const string Callout = "callout";
        public const string Backscatter = "backscatter";
    }

    public static World Build(Scenario scenario, DateTimeOffset start) => new Builder(scenario, start).Build();

    private sealed class Builder
    {
        private readonly Scenario _scenario;
        private readonly World _world;
        private readonly Vocabulary _v;
        private readonly Random _random;
        private readonly AddressSpace _space = new();
        private readonly TimeSpan _runSpan;
        private readonly List<IPAddress[]> _ispPools = [];
        private readonly List<int> _hosting = [];
        private readonly List<Account> _people = [];
        private int _index;
        private int _campaign;

        public Builder(Scenario scenario, DateTimeOffset start)
        {
            _scenario = scenario;
            _v = Vocabulary.Get(scenario.Vocabulary);
            _world = new World(scenario, start) { Vocabulary = _v };
            _random = new Random(scenario.Seed);
            _runSpan = _world.End - _world.Start;
        }

        public World Build()
        {
            Domains();
            Mailboxes();
            if (_scenario.Addresses == "pooled")
            {
                for (var p = 0; p < Math.Max(2, (_scenario.Users + _scenario.Legitimate.NewSenders) / 150); p++)
                {
                    var addresses = new List<IPAddress>();
                    for (var n = 0; n < 4; n++)
                    {
                        var network = _space.NewNetwork(bots: false);
                        addresses.AddRange(Enumerable.Range(0, 120).Select(_ => _space.In(network, _random)));
                    }

                    _ispPools.Add([.. addresses]);
                }
            }

            var users = OrdinaryUsers();
            Offices();
            Mobile();
            NewSenders();
            Compromised(users);
            BulkSenders();
            Relays();
            Verifiers();
            Harvesters();
            AuthAttacks();
            Dedupe();
            return _world;
        }

        private void Domains()
        {
            for (var d = 0; d < _scenario.LocalDomains; d++)
            {
                var word = _v.Words[d % _v.Words.Length];
                _world.Domains.Add(d < _v.Words.Length ? word + _v.Tld : word + d.ToString(CultureInfo.InvariantCulture) + _v.Tld);
            }
        }

        // Role accounts and people's names in the house style, so a dictionary walk hits some of them.
        private void Mailboxes()
        {
            foreach (var domain in _world.Domains)
            {
                foreach (var role in _v.Roles.Where(_ => _random.Next(3) == 0))
                {
                    _world.AddMailbox(role + "@" + domain);
                }

                for (var i = 0; i < _scenario.MailboxesPerDomain; i++)
                {
                    _world.AddMailbox(PersonLocal() + "@" + domain);
                }
            }
        }

        private string PersonLocal() => _v.LocalPart(_random, _v.First[_random.Next(_v.First.Length)], _v.Last[_random.Next(_v.Last.Length)]);

        private string Password() => _v.UserPassword(_random, _v);

        private Account NewAccount(string? domain = null, string suffix = "")
        {
            domain ??= _world.Domains[_random.Next(_world.Domains.Count)];
            while (true)
            {
                var name = PersonLocal() + suffix + (_world.Accounts.Count % 10 == 0 ? "" : _world.Accounts.Count.ToString(CultureInfo.InvariantCulture)) + "@" + domain;
                if (!_world.AccountsByName.ContainsKey(name))
                {
                    var account = _world.AddAccount(name, Password());
                    _people.Add(account);
                    return account;
                }

                suffix += "x";
            }
        }

        private string[] Contacts()
        {
            var contacts = Enumerable.Range(0, _random.Next(5, 30))
                .Select(_ => _random.Next(100) < 50
                    ? _world.Mailboxes[_random.Next(_world.Mailboxes.Count)]
                    : _v.First[_random.Next(_v.First.Length)] + "." + _v.Last[_random.Next(_v.Last.Length)] + "@" + _v.ExternalDomains[_random.Next(_v.ExternalDomains.Length)])
                .Distinct().ToArray();
            var outside = contacts.Where(c => !_world.MailboxSet.Contains(c)).ToArray();
            if (_random.Next(100) < _scenario.Legitimate.StaleAddressBooks)
            {
                // A stale address book: some correspondents have left and their mailboxes are gone.
                var gone = 0.1 + (0.3 * _random.NextDouble());
                foreach (var c in outside)
                {
                    if (_random.NextDouble() < gone && !_world.KnownExternal.Contains(c))
                    {
                        _world.GoneExternal.Add(c);
                    }
                }
            }

            _world.KnownExternal.UnionWith(outside.Where(c => !_world.GoneExternal.Contains(c)));
            return contacts;
        }

        // A home: one to three fixed addresses alone in their /24s (sparse), or leases from an ISP pool (pooled).
        private (AddressPlan Plan, string Group) HomePlan(string userGroup)
        {
            if (_ispPools.Count == 0)
            {
                var addresses = Enumerable.Range(0, 1 + (int)(Math.Pow(_random.NextDouble(), 2) * 3)).Select(_ => _space.Next(bots: false, newNetwork: true)).ToArray();
                return (new AddressPlan { Home = [(_world.Start, addresses[0])], Others = addresses[1..] }, userGroup);
            }

            var p = _random.Next(_ispPools.Count);
            var pool = _ispPools[p];
            var leases = new List<(DateTimeOffset, IPAddress)>();
            for (var t = _world.Start.AddDays(-_random.NextDouble() * 5); t < _world.End; t = t.AddDays(2 + (_random.NextDouble() * 5)))
            {
                leases.Add((t, pool[_random.Next(pool.Length)]));
            }

            return (new AddressPlan { Home = [.. leases] }, "isp-" + p.ToString("D2", CultureInfo.InvariantCulture));
        }

        private List<OrdinaryUser> OrdinaryUsers()
        {
            var travellers = Enumerable.Range(0, _scenario.Users).OrderBy(_ => _random.Next()).Take(_scenario.Legitimate.Travellers).ToHashSet();
            var users = new List<OrdinaryUser>();
            for (var u = 0; u < _scenario.Users; u++)
            {
                var account = NewAccount();
                var (plan, group) = HomePlan("user-" + u.ToString("D5", CultureInfo.InvariantCulture));
                var population = Populations.Ordinary;
                if (travellers.Contains(u))
                {
                    var from = _world.Start + (_runSpan * (0.1 + (0.7 * _random.NextDouble())));
                    var network = _space.NewNetwork(bots: false);
                    var hotel = Enumerable.Range(0, 1 + _random.Next(2)).Select(_ => _space.In(network, _random)).ToArray();
                    plan = new AddressPlan { Home = plan.Home, Others = plan.Others, Trip = (from, from.AddDays(2 + (_random.NextDouble() * 2)), hotel) };
                    population = Populations.Traveller;
                }

                users.Add(new OrdinaryUser(_index++, account, plan, Contacts(), 1 + (19 * Math.Pow(_random.NextDouble(), 2))) { Population = population, Group = group });
            }

            return users;
        }

        private void Offices()
        {
            var o = 0;
            foreach (var size in _scenario.Legitimate.Offices)
            {
                var group = "office-" + (o++).ToString("D2", CultureInfo.InvariantCulture);
                var nat = _space.In(_space.NewNetwork(bots: false), _random);
                var domain = _world.Domains[_random.Next(_world.Domains.Count)];
                var staff = new List<OrdinaryUser>();
                for (var u = 0; u < size; u++)
                {
                    var (home, _) = HomePlan(group);
                    var plan = new AddressPlan { Home = home.Home, Others = home.Others, Office = nat };
                    var user = new OrdinaryUser(_index++, NewAccount(domain), plan, Contacts(), 3 + (22 * Math.Pow(_random.NextDouble(), 2)))
                    {
                        Population = Populations.OfficeNat,
                        Group = group,
                    };
                    staff.Add(user);
                    Add(user);
                }

                // One phone keeps an old password for a few days.
                var owner = staff[_random.Next(staff.Count)];
                var from = _world.Start + (_runSpan * (0.1 + (0.6 * _random.NextDouble())));
                _world.Entities.Add(new StalePhone(_index++, owner.Account, Password(), nat, from, from.AddDays(1 + (_random.NextDouble() * 3))) { Population = Populations.OfficeNat });
            }
        }

        private void Mobile()
        {
            if (_scenario.Legitimate.MobileUsers == 0)
            {
                return;
            }

            var networks = new[] { _space.NewNetwork(bots: false), _space.NewNetwork(bots: false) };
            var pool = Enumerable.Range(0, _scenario.Legitimate.MobileAddresses).Select(i => _space.In(networks[i % 2], _random)).ToArray();
            for (var u = 0; u < _scenario.Legitimate.MobileUsers; u++)
            {
                Add(new OrdinaryUser(_index++, NewAccount(), new AddressPlan { Home = [], Mobile = pool }, Contacts(), 1 + (10 * Math.Pow(_random.NextDouble(), 2)))
                {
                    Population = Populations.Cgnat,
                    Group = "cgnat",
                });
            }
        }

        private void NewSenders()
        {
            for (var u = 0; u < _scenario.Legitimate.NewSenders; u++)
            {
                var (plan, group) = HomePlan("new-" + u.ToString("D4", CultureInfo.InvariantCulture));
                Add(new OrdinaryUser(_index++, NewAccount(), plan, Contacts(), 2 + (15 * _random.NextDouble()))
                {
                    Population = Populations.NewSender,
                    Group = group,
                    ActiveFrom = _world.Start + (_runSpan * (0.15 + (0.7 * _random.NextDouble()))),
                });
            }
        }

        private void Add(OrdinaryUser user)
        {
            _world.Entities.Add(user);
            LabelBenignUser(user);
        }

        private void LabelBenignUser(OrdinaryUser user)
        {
            _world.Labels.Add(new EntityLabel(EntityKind.User, user.Account.Name, ThreatClass.Benign, user.Group, user.Population, null, null));
            foreach (var ip in user.Addresses.All)
            {
                _world.Labels.Add(new EntityLabel(EntityKind.Ip, ip.ToString(), ThreatClass.Benign, user.Group, user.Population, null, null));
            }

            // The name it mistypes now and then does not exist: a legitimate client tried it.
            if (!_world.AccountsByName.ContainsKey(user.MistypedName))
            {
                _world.Labels.Add(new EntityLabel(EntityKind.User, user.MistypedName, ThreatClass.Benign, user.Group, user.Population, null, null));
            }
        }

        private IPAddress BotAddress(bool newNetwork) =>
            _scenario.Botnets == "scattered" && _random.Next(100) < 70 ? _space.AmongPeople(_random) : _space.Next(bots: true, newNetwork);

        // Campaign windows as fractions of the run, so a one-day scenario has all of them too.
        private (DateTimeOffset, DateTimeOffset) Window(double minHours, double maxHours)
        {
            var length = TimeSpan.FromHours(minHours + ((maxHours - minHours) * _random.NextDouble()));
            if (length > _runSpan * 0.8)
            {
                length = _runSpan * 0.8;
            }

            var from = _world.Start + ((_runSpan - length) * _random.NextDouble());
            return (from, from + length);
        }

        private string NextCampaign(string kind) => World.Campaign(kind, _campaign++);

        private void Compromised(List<OrdinaryUser> users)
        {
            var victims = users.Where(u => u.Population == Populations.Ordinary).OrderBy(_ => _random.Next())
                .Take(_scenario.Compromised + _scenario.StealthyCompromised).ToList();
            var stealthy = victims.Skip(_scenario.Compromised).ToHashSet();
            var c = 0;
            foreach (var user in users)
            {
                if (!victims.Contains(user))
                {
                    Add(user);
                    continue;
                }

                var quiet = stealthy.Contains(user);
                var variant = quiet ? "stealthy" : "takeover";
                var takeover = _world.Start + (_runSpan * (0.05 + (0.85 * _random.NextDouble())));
                var cleaned = Min(_world.End, takeover + (quiet ? TimeSpan.FromHours(24 + (_random.NextDouble() * 72)) : TimeSpan.FromHours(2 + (_random.NextDouble() * 20))));
                var botIps = Enumerable.Range(0, quiet ? _random.Next(1, 3) : _random.Next(2, 8)).Select(_ => BotAddress(newNetwork: true)).ToArray();
                var id = World.Campaign("compromised", c++);
                var interval = quiet ? TimeSpan.FromMinutes(10 + _random.Next(30)) : TimeSpan.FromSeconds(_random.Next(20, 90));
                _world.Entities.Add(new CompromisedUser(user, id, variant, takeover, cleaned, botIps, interval));
                LabelBenignUser(user);
                _world.Labels.Add(new EntityLabel(EntityKind.User, user.Account.Name, ThreatClass.Compromised, id, variant, takeover, cleaned));
                foreach (var ip in botIps)
                {
                    _world.Labels.Add(new EntityLabel(EntityKind.Ip, ip.ToString(), ThreatClass.Compromised, id, variant, takeover, cleaned));
                }
            }
        }

        private int Hosting()
        {
            if (_hosting.Count == 0 || _random.Next(3) == 0)
            {
                _hosting.Add(_space.NewNetwork(bots: false));
            }

            return _hosting[_random.Next(_hosting.Count)];
        }

        private void BulkSenders()
        {
            string[] kinds = [Populations.Newsletter, Populations.TicketSystem, Populations.MailingList];
            for (var h = 0; h < _scenario.HeavySenders; h++)
            {
                var kind = kinds[h % kinds.Length];
                var domain = _world.Domains[h % _world.Domains.Count];
                var account = _world.AddAccount(kind.Replace("_", "", StringComparison.Ordinal) + h.ToString(CultureInfo.InvariantCulture) + "@" + domain, Password());
                var ip = _space.In(Hosting(), _random);
                var size = kind == Populations.TicketSystem ? _random.Next(50, 201) : _random.Next(50, 501);
                var local = 0.3 + (0.6 * _random.NextDouble());
                var stale = Math.Max(1, (int)Math.Round(size * (0.01 + (0.04 * _random.NextDouble()))));
                var members = new HashSet<string>(StringComparer.Ordinal);
                while (members.Count < size - stale)
                {
                    members.Add(_random.NextDouble() < local
                        ? _world.Mailboxes[_random.Next(_world.Mailboxes.Count)]
                        : _v.First[_random.Next(_v.First.Length)] + "." + _v.Last[_random.Next(_v.Last.Length)] + _random.Next(1000).ToString(CultureInfo.InvariantCulture) + "@" + _v.ExternalDomains[_random.Next(_v.ExternalDomains.Length)]);
                }

                // Stale entries: people who left; their mailboxes are gone.
                while (members.Count < size)
                {
                    var gone = PersonLocal() + "@" + domain;
                    if (!_world.MailboxSet.Contains(gone))
                    {
                        members.Add(gone);
                    }
                }

                _world.KnownExternal.UnionWith(members.Where(m => !m.EndsWith("@" + domain, StringComparison.Ordinal) && !_world.Domains.Any(d => m.EndsWith("@" + d, StringComparison.Ordinal))));
                var group = "bulk-" + h.ToString("D3", CultureInfo.InvariantCulture);
                _world.Entities.Add(new BulkSender(_index++, kind, account, ip, [.. members.OrderBy(_ => _random.Next())]) { Population = kind });
                _world.Labels.Add(new EntityLabel(EntityKind.User, account.Name, ThreatClass.Benign, group, kind, null, null));
                _world.Labels.Add(new EntityLabel(EntityKind.Ip, ip.ToString(), ThreatClass.Benign, group, kind, null, null));
            }
        }

        private void Relays()
        {
            for (var r = 0; r < Math.Max(2, _scenario.Users / 40); r++)
            {
                var ip = _space.In(Hosting(), _random);
                _world.Entities.Add(new InboundRelay(_index++, ip, 5 + _random.Next(40)) { Population = Populations.Inbound });
                _world.Labels.Add(new EntityLabel(EntityKind.Ip, ip.ToString(), ThreatClass.Benign, "relay-" + r.ToString("D3", CultureInfo.InvariantCulture), Populations.Inbound, null, null));
            }
        }

        private void Verifiers()
        {
            var mix = _scenario.Legitimate;
            if (mix.CalloutServers + mix.BackscatterServers == 0)
            {
                return;
            }

            // Joe jobs: a spammer forges the local domain for a few hours; callouts and bounces follow.
            var joeJobs = Enumerable.Range(0, 1 + _random.Next(2)).Select(_ => Window(3, 8)).ToArray();
            for (var i = 0; i < mix.CalloutServers + mix.BackscatterServers; i++)
            {
                var kind = i < mix.CalloutServers ? Populations.Callout : Populations.Backscatter;
                var ip = _space.In(Hosting(), _random);
                _world.Entities.Add(new RemoteVerifier(_index++, kind, ip, kind == Populations.Callout ? 10 + _random.Next(50) : 4 + _random.Next(20), joeJobs) { Population = kind });
                _world.Labels.Add(new EntityLabel(EntityKind.Ip, ip.ToString(), ThreatClass.Benign, "mta-" + i.ToString("D3", CultureInfo.InvariantCulture), kind, null, null));
            }
        }

        private void Harvesters()
        {
            void AddHarvester(string variant, int count)
            {
                for (var i = 0; i < count; i++)
                {
                    var id = NextCampaign("harvest");
                    var (from, to) = variant switch
                    {
                        "fast" => Window(0.3, 1.5),
                        "low_and_slow" => (_world.Start + (_runSpan * 0.05 * _random.NextDouble()), _world.End),
                        "distributed" => Window(2, 8),
                        "sparse" => Window(48, 120),
                        _ => Window(3, 12),
                    };
                    IPAddress[] ips = variant switch
                    {
                        "distributed" => [.. Enumerable.Range(0, _random.Next(40, 120)).Select(_ => BotAddress(newNetwork: true))],
                        "sparse" => [.. Enumerable.Range(0, _random.Next(300, 1200)).Select(_ => BotAddress(newNetwork: _random.Next(3) == 0))],
                        _ => [BotAddress(newNetwork: true)],
                    };
                    Account? account = null;
                    if (variant == "submission")
                    {
                        account = _world.AddAccount("promo" + _campaign.ToString(CultureInfo.InvariantCulture) + "@" + _world.Domains[_random.Next(_world.Domains.Count)], Password());
                        _world.Labels.Add(new EntityLabel(EntityKind.User, account.Name, ThreatClass.Harvester, id, variant, from, to));
                    }

                    _world.Entities.Add(new Harvester(_index++, id, variant, from, to, ips, account, altDictionary: _random.Next(2) == 0));
                    foreach (var ip in ips)
                    {
                        _world.Labels.Add(new EntityLabel(EntityKind.Ip, ip.ToString(), ThreatClass.Harvester, id, variant, from, to));
                    }
                }
            }

            AddHarvester("fast", _scenario.Harvesters.Fast);
            AddHarvester("low_and_slow", _scenario.Harvesters.LowAndSlow);
            AddHarvester("distributed", _scenario.Harvesters.Distributed);
            AddHarvester("submission", _scenario.Harvesters.Submission);
            AddHarvester("sparse", _scenario.Harvesters.Sparse);
        }

        private void AuthAttacks()
        {
            var accounts = _people;
            var random = _random;
            string Unknown() => _v.First[random.Next(_v.First.Length)] + random.Next(1000).ToString(CultureInfo.InvariantCulture) + "@" + _world.Domains[random.Next(_world.Domains.Count)];
            string Leaked() => _v.Passwords[random.Next(_v.Passwords.Length)];

            // Leaked pairs: a few reused passwords that work, many stale ones, names that never existed.
            List<(string, string)> Pairs(int count)
            {
                var pairs = new List<(string, string)>();
                for (var p = 0; p < count; p++)
                {
                    var roll = random.Next(100);
                    if (roll < 5)
                    {
                        var a = accounts[random.Next(accounts.Count)];
                        pairs.Add((a.Name, a.Password));
                    }
                    else
                    {
                        pairs.Add(roll < 65 ? (accounts[random.Next(accounts.Count)].Name, Leaked()) : (Unknown(), Leaked()));
                    }
                }

                return pairs;
            }

            void AddAuth(string label, string variant, int count, Func<(IPAddress[], List<(string, string)>)> make, double minHours, double maxHours)
            {
                for (var i = 0; i < count; i++)
                {
                    var id = NextCampaign(label);
                    var (from, to) = Window(minHours, maxHours);
                    var (ips, attempts) = make();
                    _world.Entities.Add(new AuthAttacker(_index++, label, id, variant, from, to, ips, attempts));
                    var cls = ThreatClasses.FromLabel(label);
                    foreach (var ip in ips)
                    {
                        _world.Labels.Add(new EntityLabel(EntityKind.Ip, ip.ToString(), cls, id, variant, from, to));
                    }

                    // The accounts under attack (and the names that never existed) are part of the campaign.
                    foreach (var user in attempts.Select(a => AccountName.Normalize(a.Item1)).Distinct(StringComparer.Ordinal))
                    {
                        _world.Labels.Add(new EntityLabel(EntityKind.User, user, cls, id, variant, from, to));
                    }
                }
            }

            AddAuth(Behaviour.BruteForce, "wordlist", _scenario.BruteForcers, () =>
            {
                var target = accounts[random.Next(accounts.Count)].Name;
                return ([BotAddress(newNetwork: true)], [.. _v.Passwords.Concat(_v.Words).Select(p => (target, p))]);
            }, 0.5, 3);
            AddAuth(Behaviour.Spraying, "one_password", _scenario.Sprayers, () =>
            {
                var password = _v.Passwords[^random.Next(1, 6)];
                var targets = accounts.OrderBy(_ => random.Next()).Take(Math.Min(accounts.Count, 150)).Select(a => a.Name)
                    .Concat(_v.Roles.Select(r => r + "@" + _world.Domains[0]));
                var network = BotAddress(newNetwork: true);
                return ([network, .. Enumerable.Range(0, random.Next(0, 3)).Select(_ => BotAddress(newNetwork: false))], [.. targets.OrderBy(_ => random.Next()).Select(t => (t, password))]);
            }, 3, 12);
            AddAuth(Behaviour.Stuffing, "leaked_pairs", _scenario.Stuffers, () =>
            {
                var pairs = Pairs(random.Next(90, 300));
                return ([.. Enumerable.Range(0, (pairs.Count / 3) + 1).Select(_ => BotAddress(newNetwork: random.Next(4) == 0))], pairs);
            }, 2, 12);
            AddAuth(Behaviour.Stuffing, "scattered_pairs", _scenario.ScatteredStuffers, () =>
            {
                var pairs = Pairs(random.Next(150, 600));
                return ([.. pairs.Select(_ => BotAddress(newNetwork: true))], pairs);
            }, 24, 72);
            AddAuth(Behaviour.Spraying, "slow_spray", _scenario.SlowSprayers, () =>
            {
                var password = Leaked();
                var targets = accounts.OrderBy(_ => random.Next()).Take(Math.Min(accounts.Count, random.Next(150, 400))).Select(a => (a.Name, password)).ToList();
                return ([.. Enumerable.Range(0, (targets.Count / 3) + 1).Select(_ => BotAddress(newNetwork: true))], targets);
            }, 48, 120);
        }

        // One row per (kind, entity, campaign): an address shared by a group is labelled once.
        private void Dedupe()
        {
            var seen = new HashSet<(EntityKind, string, string)>();
            _world.Labels.RemoveAll(l => !seen.Add((l.Kind, l.Entity, l.Campaign)));
        }
    }

    private static DateTimeOffset Min(DateTimeOffset a, DateTimeOffset b) => a < b ? a : b;
}
