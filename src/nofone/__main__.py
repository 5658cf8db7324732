from nofone.cli.app import main

main()
