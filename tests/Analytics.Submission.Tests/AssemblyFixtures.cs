[assembly: AssemblyFixture(typeof(Analytics.Testing.StoreFixture))]
