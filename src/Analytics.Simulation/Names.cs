namespace Analytics.Simulation;

/// <summary>Word lists: mailbox names, the harvesters' dictionary, and the attackers' password lists.</summary>
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

    /// <summary>The harvester's dictionary: role accounts, first names, first.last and initial+last, in the order a bot walks it.</summary>
    public static IReadOnlyList<string> Dictionary { get; } = BuildDictionary();

    private static string[] BuildDictionary()
    {
        var list = new List<string>(Roles);
        list.AddRange(First);
        foreach (var f in First.Take(60))
        {
            foreach (var l in Last.Take(20))
            {
                list.Add(f + "." + l);
                list.Add(f[0] + l);
            }
        }

        return [.. list.Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal)];
    }
}
