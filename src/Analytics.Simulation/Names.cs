namespace Analytics.Simulation;

/// <summary>
/// The word lists a world is generated from: people's names, role accounts, domain words, outside
/// domains, the attackers' password list and the harvesters' dictionary, plus the style of mailbox
/// names and users' passwords. Two vocabularies share no list, so a model trained on a world of one
/// and tested on a world of the other never meets the names, domains, passwords or dictionary it was
/// trained on (<see cref="Scenario.Vocabulary"/>).
/// </summary>
internal sealed class Vocabulary
{
    public required string Name { get; init; }

    public required string[] First { get; init; }

    public required string[] Last { get; init; }

    /// <summary>Role accounts every harvester tries first.</summary>
    public required string[] Roles { get; init; }

    public required string[] Passwords { get; init; }

    public required string[] ExternalDomains { get; init; }

    public required string[] Words { get; init; }

    /// <summary>TLD of the local domains.</summary>
    public required string Tld { get; init; }

    /// <summary>A mailbox local part for a person, in this vocabulary's house style.</summary>
    public required Func<Random, string, string, string> LocalPart { get; init; }

    /// <summary>An account's password, in this vocabulary's style.</summary>
    public required Func<Random, Vocabulary, string> UserPassword { get; init; }

    /// <summary>The harvesters' dictionary, in the order a bot walks it.</summary>
    public required IReadOnlyList<string> Dictionary { get; init; }

    /// <summary>A second dictionary, for harvest campaigns that are held out of training: other patterns, other order.</summary>
    public required IReadOnlyList<string> AltDictionary { get; init; }

    public static Vocabulary Get(string name) => name switch
    {
        "a" => A,
        "b" => B,
        _ => throw new ArgumentException($"vocabulary must be 'a' or 'b' (is '{name}')", nameof(name)),
    };

    public static Vocabulary A { get; } = BuildA();

    public static Vocabulary B { get; } = BuildB();

    private static Vocabulary BuildA()
    {
        var first = Names.First;
        var last = Names.Last;
        return new Vocabulary
        {
            Name = "a",
            First = first,
            Last = last,
            Roles = Names.Roles,
            Passwords = Names.Passwords,
            ExternalDomains = Names.ExternalDomains,
            Words = Names.Words,
            Tld = ".test",
            LocalPart = (random, f, l) => random.Next(4) switch { 0 => f, 1 => f[0] + l, _ => f + "." + l },
            UserPassword = (random, v) => v.Words[random.Next(v.Words.Length)] + "-" + v.Words[random.Next(v.Words.Length)] + random.Next(10, 99).ToString(System.Globalization.CultureInfo.InvariantCulture),
            Dictionary = Ordered([.. Names.Roles, .. first, .. first.Take(60).SelectMany(f => last.Take(20).SelectMany(l => new[] { f + "." + l, f[0] + l }))]),
            AltDictionary = Shuffled([.. first.Take(90).SelectMany(f => last.Take(25).Select(l => f + l)), .. first.Select(f => f + "1")], 11),
        };
    }

    private static Vocabulary BuildB()
    {
        var first = Names.FirstB;
        var last = Names.LastB;
        return new Vocabulary
        {
            Name = "b",
            First = first,
            Last = last,
            Roles = Names.RolesB,
            Passwords = Names.PasswordsB,
            ExternalDomains = Names.ExternalDomainsB,
            Words = Names.WordsB,
            Tld = ".example",
            LocalPart = (random, f, l) => random.Next(5) switch { 0 => f + "_" + l, 1 => f + l[0], 2 => f[0] + "." + l, _ => f + "-" + l },
            UserPassword = (random, v) => new string([.. Enumerable.Range(0, 10 + random.Next(6)).Select(_ => "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789!#%"[random.Next(58)])]),
            Dictionary = Shuffled([.. Names.RolesB, .. first, .. first.Take(70).SelectMany(f => last.Take(25).SelectMany(l => new[] { f + "_" + l, f + l[0], f[0] + "." + l, f + "-" + l }))], 5),
            AltDictionary = Ordered([.. first.SelectMany(f => last.Take(30).Select(l => l + "." + f)), .. Names.RolesB.Select(r => r + "-team")]),
        };
    }

    private static string[] Ordered(IEnumerable<string> names) => [.. names.Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal)];

    private static string[] Shuffled(IEnumerable<string> names, int seed)
    {
        var random = new Random(seed);
        return [.. names.Distinct(StringComparer.Ordinal).OrderBy(_ => random.Next())];
    }
}

/// <summary>The raw word lists of both vocabularies.</summary>
internal static class Names
{
    public static readonly string[] First =
    [
        "aaron", "abby", "adam", "adrian", "alan", "albert", "alex", "alice", "amanda", "amy", "andrea", "andrew", "angela", "anna", "anne", "anthony",
        "arthur", "ashley", "barbara", "ben", "betty", "bill", "bob", "brandon", "brenda", "brian", "bruce", "carl", "carol", "caroline", "catherine",
        "charles", "chris", "christine", "cindy", "claire", "daniel", "david", "deborah", "dennis", "diana", "donald", "donna", "dorothy", "edward",
        "elena", "elizabeth", "emily", "emma", "eric", "frank", "gary", "george", "grace", "gregory", "hannah", "harold", "helen", "henry", "jack",
        "james", "jane", "janet", "jason", "jean", "jeff", "jennifer", "jeremy", "jessica", "joan", "john", "jonathan", "joseph", "joyce", "judith",
        "julia", "julie", "karen", "kate", "kathleen", "keith", "kelly", "kenneth", "kevin", "kim", "larry", "laura", "lauren", "linda", "lisa",
        "louis", "lucy", "margaret", "maria", "marie", "mark", "martha", "mary", "matthew", "megan", "melissa", "michael", "michelle", "nancy",
        "nathan", "nicholas", "nicole", "olivia", "pamela", "patricia", "patrick", "paul", "peter", "philip", "rachel", "raymond", "rebecca",
        "richard", "robert", "roger", "ronald", "rose", "ruth", "ryan", "samuel", "sandra", "sarah", "scott", "sharon", "shirley", "sophia",
        "stephanie", "stephen", "steven", "susan", "teresa", "thomas", "timothy", "victoria", "virginia", "walter", "wayne", "william", "zoe",
    ];

    public static readonly string[] Last =
    [
        "adams", "allen", "baker", "bell", "brown", "campbell", "carter", "clark", "collins", "cook", "davis", "edwards", "evans", "garcia", "green",
        "hall", "harris", "hill", "jackson", "johnson", "jones", "king", "lee", "lewis", "martin", "miller", "mitchell", "moore", "morris", "nelson",
        "parker", "perez", "phillips", "roberts", "robinson", "scott", "smith", "stewart", "taylor", "thomas", "thompson", "turner", "walker",
        "white", "williams", "wilson", "wright", "young",
    ];

    /// <summary>Role accounts every harvester tries first.</summary>
    public static readonly string[] Roles =
    [
        "abuse", "accounts", "admin", "billing", "contact", "office", "hello", "help", "hr", "info", "jobs", "mail", "marketing", "news", "noreply",
        "orders", "postmaster", "press", "sales", "security", "service", "support", "team", "webmaster",
    ];

    public static readonly string[] Passwords =
    [
        "123456", "password", "12345678", "qwerty", "123456789", "12345", "1234", "111111", "1234567", "dragon", "123123", "baseball", "abc123",
        "football", "monkey", "letmein", "696969", "shadow", "master", "666666", "qwertyuiop", "123321", "mustang", "1234567890", "michael",
        "654321", "superman", "1qaz2wsx", "7777777", "121212", "000000", "qazwsx", "123qwe", "killer", "trustno1", "jordan", "jennifer", "zxcvbnm",
        "asdfgh", "hunter", "buster", "soccer", "harley", "batman", "andrew", "tigger", "sunshine", "iloveyou", "2000", "charlie", "robert",
        "thomas", "hockey", "ranger", "daniel", "starwars", "klaster", "112233", "george", "computer", "michelle", "jessica", "pepper", "1111",
        "zxcvbn", "555555", "11111111", "131313", "freedom", "777777", "pass", "maggie", "159753", "aaaaaa", "ginger", "princess", "joshua",
        "cheese", "amanda", "summer", "love", "ashley", "nicole", "chelsea", "biteme", "matthew", "access", "yankees", "987654321", "dallas",
        "austin", "thunder", "taylor", "matrix", "Welcome1", "Summer2025!", "Winter2024!", "Spring2025", "P@ssw0rd", "Password1",
    ];

    public static readonly string[] ExternalDomains =
    [
        "mail.example.com", "example.net", "inbox.example.org", "post.example", "webmail.example.com", "corp.example.net", "client.example",
        "partner.example.org", "isp.example", "home.example.net",
    ];

    public static readonly string[] Words =
    [
        "blue", "river", "stone", "maple", "cloud", "tiger", "amber", "cedar", "delta", "ember", "falcon", "garden", "harbor", "island", "jade",
        "kite", "lemon", "meadow", "north", "ocean", "pearl", "quartz", "raven", "silver", "thunder", "velvet", "willow", "zephyr",
    ];


    public static readonly string[] FirstB =
    [
        "ahmed", "aiko", "akira", "alejandro", "amara", "anders", "anika", "arjun", "astrid", "aylin", "bao", "beatriz", "bjorn", "bogdan", "camila",
        "carmen", "chen", "chiara", "dagny", "dario", "deepa", "dmitri", "eero", "elif", "emre", "esra", "farah", "fatima", "felix", "freya", "goran",
        "hana", "hamid", "haruto", "helga", "hiroshi", "ines", "ingrid", "irina", "ismael", "ivan", "jana", "javier", "jin", "joao", "jonas", "jorge",
        "kaito", "kamila", "karim", "katarina", "kenji", "kiran", "klaus", "lars", "leila", "lena", "liam", "lina", "luca", "luis", "magnus", "mai",
        "malik", "marco", "mariam", "mateo", "mei", "mikael", "milan", "mina", "miguel", "nadia", "naoko", "nils", "noor", "oksana", "olga", "omar",
        "oskar", "paulo", "pavel", "priya", "rafael", "rania", "ravi", "rosa", "sakura", "samir", "sanjay", "sara", "sergei", "sigrid", "sofia",
        "soren", "sun", "tariq", "tomas", "ulla", "valentina", "vera", "viktor", "wei", "yasmin", "yuki", "yusuf", "zainab", "zeynep", "zoran",
    ];

    public static readonly string[] LastB =
    [
        "andersen", "bauer", "becker", "costa", "demir", "dubois", "eriksson", "fernandes", "fischer", "garcia", "gonzalez", "hansen", "hoffmann",
        "ivanova", "jensen", "kaya", "kim", "kowalski", "kumar", "larsen", "lindqvist", "lopez", "martins", "meyer", "moreau", "nakamura", "nguyen",
        "nielsen", "novak", "ozturk", "patel", "petrov", "popescu", "rossi", "santos", "schmidt", "schneider", "sato", "silva", "singh", "suzuki",
        "tanaka", "wagner", "wang", "weber", "yamamoto", "yilmaz", "zhang",
    ];

    public static readonly string[] RolesB =
    [
        "accounting", "careers", "compliance", "customer", "dev", "finance", "frontdesk", "it", "legal", "ops", "payroll", "purchasing", "reception",
        "recruiting", "root", "sysadmin", "tech", "web", "enquiries", "feedback", "invoices", "partners", "service-desk", "team",
    ];

    public static readonly string[] PasswordsB =
    [
        "qwerty123", "iloveyou1", "Password123!", "Company2025", "letmein!", "admin123", "welcome2025", "Spring2026!", "Autumn2025", "passw0rd!",
        "1q2w3e4r", "1q2w3e4r5t", "zaq12wsx", "asdf1234", "qazwsxedc", "changeme", "Changeme1", "abcd1234", "monday1", "Football1", "Liverpool1",
        "chocolate", "Blink182", "pokemon1", "naruto", "samsung", "lovely", "Hello123", "secret1", "987654", "5201314", "a123456", "aa123456",
        "q1w2e3r4", "p@ssword", "Qwerty1!", "Test1234", "Summer2026", "Office2025!", "Winter2025", "Temp1234", "Welcome!", "Admin@123",
        "P@ssw0rd2025", "default", "guest", "user1234", "mypassword", "iloveu", "987654321a",
    ];

    public static readonly string[] ExternalDomainsB =
    [
        "mx.example.org", "mail.example.info", "users.example.net", "post.example.co", "home.example.org", "office.example.com", "customer.example",
        "vendor.example.net", "shop.example.org", "school.example.edu",
    ];

    public static readonly string[] WordsB =
    [
        "acme", "birch", "cobalt", "dune", "fjord", "glacier", "heron", "indigo", "juniper", "kestrel", "lagoon", "mesa", "nimbus", "onyx", "prairie",
        "quill", "rowan", "sable", "tundra", "umber", "vista", "wren", "yarrow", "zinc",
    ];
}
