using System.Globalization;
using System.Net;
using Analytics.Simulation.Models;

namespace Analytics.Simulation;

/// <summary>Builds the <see cref="World"/> of a scenario from its seed: same seed and start, same world.</summary>
public static class WorldBuilder
{
    public static World Build(Scenario scenario, DateTimeOffset start)
    {
        var world = new World(scenario, start);
        var random = new Random(scenario.Seed);
        var people = new AddressAllocator(1, 99);
        var bots = new AddressAllocator(100, 254);
        var runSpan = world.End - world.Start;
        var index = 0;

        for (var d = 0; d < scenario.LocalDomains; d++)
        {
            var word = Names.Words[d % Names.Words.Length];
            world.Domains.Add(d < Names.Words.Length ? word + ".test" : word + d.ToString(CultureInfo.InvariantCulture) + ".test");
        }

        // Mailboxes: role accounts and people's names, so a dictionary walk hits some of them.
        foreach (var domain in world.Domains)
        {
            foreach (var role in Names.Roles.Where(_ => random.Next(3) == 0))
            {
                world.AddMailbox(role + "@" + domain);
            }

            for (var i = 0; i < scenario.MailboxesPerDomain; i++)
            {
                var first = Names.First[random.Next(Names.First.Length)];
                var last = Names.Last[random.Next(Names.Last.Length)];
                world.AddMailbox((random.Next(4) switch { 0 => first, 1 => first[0] + last, _ => first + "." + last }) + "@" + domain);
            }
        }

        string Password() => Names.Words[random.Next(Names.Words.Length)] + "-" + Names.Words[random.Next(Names.Words.Length)] + random.Next(10, 99).ToString(CultureInfo.InvariantCulture);

        var users = new List<OrdinaryUser>();
        for (var u = 0; u < scenario.Users; u++)
        {
            var domain = world.Domains[random.Next(world.Domains.Count)];
            var name = Names.First[random.Next(Names.First.Length)] + "." + Names.Last[random.Next(Names.Last.Length)] + u.ToString(CultureInfo.InvariantCulture) + "@" + domain;
            var account = world.AddAccount(name, Password());
            var addresses = Enumerable.Range(0, 1 + (int)(Math.Pow(random.NextDouble(), 2) * 3)).Select(_ => people.Next(newNetwork: true)).ToArray();
            var contacts = Enumerable.Range(0, random.Next(5, 30))
                .Select(_ => random.Next(100) < 50 ? "" : Names.First[random.Next(Names.First.Length)] + "." + Names.Last[random.Next(Names.Last.Length)] + "@" + Names.ExternalDomains[random.Next(Names.ExternalDomains.Length)])
                .ToArray();
            users.Add(new OrdinaryUser(index++, account, addresses, contacts, 1 + (19 * Math.Pow(random.NextDouble(), 2))));
        }

        // Local contacts once every mailbox exists.
        foreach (var user in users)
        {
            for (var i = 0; i < user.Contacts.Length; i++)
            {
                if (user.Contacts[i].Length == 0)
                {
                    user.Contacts[i] = world.Mailboxes[random.Next(world.Mailboxes.Count)];
                }
            }
        }

        // Compromised accounts: taken from the ordinary users, taken over during the run.
        var victims = users.OrderBy(_ => random.Next()).Take(scenario.Compromised).ToHashSet();
        var c = 0;
        foreach (var user in users)
        {
            if (!victims.Contains(user))
            {
                world.Entities.Add(user);
                Label(world, user, ThreatClass.Benign, "", "", null, null);
                continue;
            }

            var takeover = world.Start + (runSpan * (0.3 + (0.4 * random.NextDouble())));
            var cleaned = Min(world.End, takeover + TimeSpan.FromHours(2 + (random.NextDouble() * 20)));
            var botIps = Enumerable.Range(0, random.Next(2, 8)).Select(_ => bots.Next(newNetwork: true)).ToArray();
            var id = World.Campaign("compromised", c++);
            var compromised = new CompromisedUser(user, id, takeover, cleaned, botIps, TimeSpan.FromSeconds(random.Next(20, 90)));
            world.Entities.Add(compromised);
            world.Labels.Add(new EntityLabel(EntityKind.User, user.Account.Name, ThreatClass.Compromised, id, "takeover", takeover, cleaned));
            foreach (var ip in user.Addresses)
            {
                world.Labels.Add(new EntityLabel(EntityKind.Ip, ip.ToString(), ThreatClass.Benign, "", "", null, null));
            }

            foreach (var ip in botIps)
            {
                world.Labels.Add(new EntityLabel(EntityKind.Ip, ip.ToString(), ThreatClass.Compromised, id, "takeover", takeover, cleaned));
            }
        }

        for (var h = 0; h < scenario.HeavySenders; h++)
        {
            var domain = world.Domains[h % world.Domains.Count];
            var account = world.AddAccount((h % 2 == 0 ? "newsletter" : "tickets") + h.ToString(CultureInfo.InvariantCulture) + "@" + domain, Password());
            var ip = people.Next(newNetwork: true);
            world.Entities.Add(new HeavySender(index++, account, ip, TimeSpan.FromMinutes(2 + random.Next(8))));
            world.Labels.Add(new EntityLabel(EntityKind.User, account.Name, ThreatClass.Benign, "", Behaviour.HeavySender, null, null));
            world.Labels.Add(new EntityLabel(EntityKind.Ip, ip.ToString(), ThreatClass.Benign, "", Behaviour.HeavySender, null, null));
        }

        for (var r = 0; r < Math.Max(2, scenario.Users / 40); r++)
        {
            var ip = people.Next(newNetwork: true);
            world.Entities.Add(new InboundRelay(index++, ip, 5 + random.Next(40)));
            world.Labels.Add(new EntityLabel(EntityKind.Ip, ip.ToString(), ThreatClass.Benign, "", "inbound", null, null));
        }

        // Campaign windows as fractions of the run, so a one-day scenario has all of them too.
        (DateTimeOffset, DateTimeOffset) Window(double minHours, double maxHours)
        {
            var length = TimeSpan.FromHours(minHours + ((maxHours - minHours) * random.NextDouble()));
            if (length > runSpan * 0.8)
            {
                length = runSpan * 0.8;
            }

            var from = world.Start + ((runSpan - length) * random.NextDouble());
            return (from, from + length);
        }

        var campaign = 0;
        void AddHarvester(string variant, int count)
        {
            for (var i = 0; i < count; i++)
            {
                var id = World.Campaign("harvest", campaign++);
                var (from, to) = variant switch
                {
                    "fast" => Window(0.3, 1.5),
                    "low_and_slow" => (world.Start + (runSpan * 0.05 * random.NextDouble()), world.End),
                    "distributed" => Window(2, 8),
                    _ => Window(3, 12),
                };
                IPAddress[] ips = variant == "distributed"
                    ? [.. Enumerable.Range(0, random.Next(40, 120)).Select(_ => bots.Next(newNetwork: true))]
                    : [bots.Next(newNetwork: true)];
                Account? account = null;
                if (variant == "submission")
                {
                    account = world.AddAccount("promo" + campaign.ToString(CultureInfo.InvariantCulture) + "@" + world.Domains[random.Next(world.Domains.Count)], Password());
                    world.Labels.Add(new EntityLabel(EntityKind.User, account.Name, ThreatClass.Harvester, id, variant, from, to));
                }

                world.Entities.Add(new Harvester(index++, id, variant, from, to, ips, account));
                foreach (var ip in ips)
                {
                    world.Labels.Add(new EntityLabel(EntityKind.Ip, ip.ToString(), ThreatClass.Harvester, id, variant, from, to));
                }
            }
        }

        AddHarvester("fast", scenario.Harvesters.Fast);
        AddHarvester("low_and_slow", scenario.Harvesters.LowAndSlow);
        AddHarvester("distributed", scenario.Harvesters.Distributed);
        AddHarvester("submission", scenario.Harvesters.Submission);

        var accounts = world.Accounts.Where(a => users.Any(u => u.Account == a)).ToList();
        void AddAuth(string label, string variant, int count, Func<(IPAddress[], List<(string, string)>)> make, double minHours, double maxHours)
        {
            for (var i = 0; i < count; i++)
            {
                var id = World.Campaign(label, campaign++);
                var (from, to) = Window(minHours, maxHours);
                var (ips, attempts) = make();
                world.Entities.Add(new AuthAttacker(index++, label, id, variant, from, to, ips, attempts));
                foreach (var ip in ips)
                {
                    world.Labels.Add(new EntityLabel(EntityKind.Ip, ip.ToString(), ThreatClasses.FromLabel(label), id, variant, from, to));
                }
            }
        }

        AddAuth(Behaviour.BruteForce, "wordlist", scenario.BruteForcers, () =>
        {
            var target = accounts[random.Next(accounts.Count)].Name;
            return ([bots.Next(newNetwork: true)], [.. Names.Passwords.Concat(Names.Words).Select(p => (target, p))]);
        }, 0.5, 3);
        AddAuth(Behaviour.Spraying, "one_password", scenario.Sprayers, () =>
        {
            var password = Names.Passwords[^random.Next(1, 6)];
            var targets = accounts.OrderBy(_ => random.Next()).Take(Math.Min(accounts.Count, 150)).Select(a => a.Name)
                .Concat(Names.Roles.Select(r => r + "@" + world.Domains[0]));
            return ([.. Enumerable.Range(0, random.Next(1, 4)).Select(_ => bots.Next(newNetwork: false))], [.. targets.OrderBy(_ => random.Next()).Select(t => (t, password))]);
        }, 3, 12);
        AddAuth(Behaviour.Stuffing, "leaked_pairs", scenario.Stuffers, () =>
        {
            var pairs = new List<(string, string)>();
            for (var p = 0; p < random.Next(90, 300); p++)
            {
                var roll = random.Next(100);
                if (roll < 5)
                {
                    var a = accounts[random.Next(accounts.Count)];
                    pairs.Add((a.Name, a.Password)); // a reused password that works
                }
                else if (roll < 65)
                {
                    pairs.Add((accounts[random.Next(accounts.Count)].Name, Names.Passwords[random.Next(Names.Passwords.Length)]));
                }
                else
                {
                    pairs.Add((Names.First[random.Next(Names.First.Length)] + random.Next(1000).ToString(CultureInfo.InvariantCulture) + "@" + world.Domains[random.Next(world.Domains.Count)],
                        Names.Passwords[random.Next(Names.Passwords.Length)]));
                }
            }

            return ([.. Enumerable.Range(0, (pairs.Count / 3) + 1).Select(_ => bots.Next(newNetwork: random.Next(4) == 0))], pairs);
        }, 2, 12);

        return world;
    }

    private static void Label(World world, OrdinaryUser user, ThreatClass label, string campaign, string variant, DateTimeOffset? from, DateTimeOffset? to)
    {
        world.Labels.Add(new EntityLabel(EntityKind.User, user.Account.Name, label, campaign, variant, from, to));
        foreach (var ip in user.Addresses)
        {
            world.Labels.Add(new EntityLabel(EntityKind.Ip, ip.ToString(), ThreatClass.Benign, campaign, variant, null, null));
        }
    }

    private static DateTimeOffset Min(DateTimeOffset a, DateTimeOffset b) => a < b ? a : b;
}
